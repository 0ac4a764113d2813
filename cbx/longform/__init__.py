"""Long-form projects: a book's text made chunk by chunk, kept safe on disk, resumed,
re-rolled, exported.

Why "longform" and not "projects": `cbx.projects()` is the public function that lists
them, and a subpackage of that name would replace it as an attribute of `cbx` the
moment it is imported.

    project.py   cbx.project() / cbx.projects() and the Project handle
    maker.py     making a chunk: speak() per try, the guard's retries, the take stored
    store.py     the transactional store (sqlite3): plan, chunks, takes, the writer lock
    sources.py   text from plain text, Markdown or SubRip, read through one capped reader
    guard.py     the babble guard: does a chunk's audio fit its text?
"""
from __future__ import annotations

from .project import Changes, Project, project, projects

__all__ = ["Changes", "Project", "project", "projects"]
