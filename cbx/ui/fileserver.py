"""The server side of downloads.py: a route that serves the output folder's audio and
settings files, in Voila (`python -m cbx.ui`) and in JupyterLab (a Jupyter server
extension) alike.

Why a handler of our own: the output folder is wherever CBX_OUTPUT_DIR says, not under
the folder Voila or JupyterLab serve, and Voila's own file route is a plain static
handler that skips the server's Host check. This one is jupyter_server's
AuthenticatedFileHandler, so it keeps every check the page has: the Host check
(DNS rebinding), the login (JupyterLab's token), the cross-origin check on the
Referer, no hidden files and nothing outside its folder; and it serves only the kinds
of file the page links to (downloads.SERVED_SUFFIXES), never a project's store.

JupyterLab loads it when `cbx.ui.fileserver` is enabled as a server extension
(voila_config/jupyter_server_config.d/cbx.json says so). Voila runs no server
extensions, so `python -m cbx.ui` starts `studio_voila()`, Voila with this route and
the cross-site guard of guard_http.
"""
from __future__ import annotations

from pathlib import Path

from jupyter_server.base.handlers import AuthenticatedFileHandler
from jupyter_server.utils import url_path_join
from tornado import web

from ..paths import output_dir
from .downloads import ROUTE, SERVED_SUFFIXES


class OutputFileHandler(AuthenticatedFileHandler):
    """GET <base>/cbx/outputs/<path>: a file of the output folder, as an attachment
    when `?download=1`."""

    def initialize(self) -> None:
        super().initialize(path=str(output_dir()))

    def validate_absolute_path(self, root: str, absolute_path: str) -> str:
        if Path(absolute_path).suffix.lower() not in SERVED_SUFFIXES:
            raise web.HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)


def handlers(base_url: str) -> list:
    return [(url_path_join(base_url, ROUTE, "(.*)"), OutputFileHandler)]


def studio_voila():
    """Voila's application class with the output route in front of its own routes
    (its notebook route matches every path, so the route must come first), all of them
    behind the cross-site guard (guard_http), and the browser opened on the page's own
    address."""
    import threading
    import webbrowser

    from voila.app import Voila

    from .guard_http import guarded

    class StudioVoila(Voila):
        def init_handlers(self) -> list:
            return guarded(handlers(self.server_url) + super().init_handlers(), self.log)

        def launch_browser(self) -> None:
            """Open the URL itself: Voila opens a local file that redirects to it, and
            the browser marks that redirect cross-site, which the guard refuses. There
            is no token to keep off the command line."""
            try:
                browser = webbrowser.get(self.browser or None)
            except webbrowser.Error as exc:
                self.log.warning("No web browser found: %s.", exc)
                return
            url = url_path_join(self.connection_url, self.base_url)
            threading.Thread(target=browser.open, args=(url,),
                             kwargs={"new": self.webbrowser_open_new}).start()

    return StudioVoila


def _jupyter_server_extension_points():
    return [{"module": "cbx.ui.fileserver"}]


def _load_jupyter_server_extension(serverapp) -> None:
    serverapp.web_app.add_handlers(".*$", handlers(serverapp.base_url))
