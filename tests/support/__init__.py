"""What several test modules share: the fake backend and the page drivers
(dashboard.py), the browser helpers (browser.py)."""
