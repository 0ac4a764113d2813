"""The status report's shape and its two renderings: sections of rows (label, state,
detail, fix), written as text for `python -m cbx status` and as HTML for a notebook's
`cbx.status()` and the dashboard's health panel.

Why its own module: the report is built once (cbx.envcheck.StatusReport.sections) and
each place only renders it, so the terminal, the notebook and the page never disagree
about what is wrong. Standard library only; no knowledge of what the rows mean.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

# A row's state word -> how it is marked: "ok", "bad" (stops cbx from working), "warn"
# (works, but worth knowing), "" (a plain fact, no verdict).
STATE_KINDS = {
    "": "", "ok": "ok", "complete": "ok",
    "missing": "bad", "broken": "bad", "incomplete": "bad", "unusable": "bad",
    "problem": "bad", "not downloaded": "warn", "holds a model": "warn",
}

# The health table's look, the same in a notebook (cbx.status()) and on the page, where
# cbx.ui.render.CSS includes it.
CSS_RULES = """
.cbx-ok { color: #137333; font-weight: 600; }
.cbx-bad { color: #b00020; font-weight: 600; }
.cbx-warn { color: #a15c00; font-weight: 600; }
.cbx-health table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
.cbx-health table { table-layout: fixed; }
.cbx-health th { text-align: left; color: #486581; font-weight: 600; padding: 3px 6px 3px 0;
  vertical-align: top; width: 34%; }
.cbx-health td { padding: 3px 0; vertical-align: top; }
.cbx-health h4 { margin: 10px 0 4px; font-size: 13px; color: #243b53; }
"""

_TEXT_LABEL_WIDTH = 28     # longer labels (a weight file's name) push their detail right


@dataclass(frozen=True)
class Row:
    label: str
    state: str = ""             # a key of STATE_KINDS
    detail: str = ""
    fix: str | None = None      # what to do about it, for a row that is a problem

    def __post_init__(self):
        if self.state not in STATE_KINDS:
            raise ValueError(f"unknown row state {self.state!r}")

    @property
    def kind(self) -> str:
        return STATE_KINDS[self.state]


@dataclass(frozen=True)
class Section:
    title: str
    rows: tuple[Row, ...]


def to_text(sections: list[Section]) -> str:
    """Aligned columns (state, label, detail), a fix on its own line. ASCII only where
    the rows are: the Windows console's default code page cannot print check marks."""
    lines: list[str] = []
    for section in sections:
        lines += ["", f"{section.title}:"]
        state_width = max((len(r.state) for r in section.rows), default=0)
        label_width = min(max((len(r.label) for r in section.rows), default=0),
                          _TEXT_LABEL_WIDTH)
        for row in section.rows:
            mark = row.state.upper() if row.kind == "bad" else row.state
            cells = ([mark.ljust(state_width)] if state_width else []) + \
                [row.label.ljust(label_width), row.detail]
            lines.append(("  " + "  ".join(cells)).rstrip())
            if row.fix:
                lines.append(f"      fix: {row.fix}")
    return "\n".join(lines)


def to_html(sections: list[Section]) -> str:
    """One titled table per section; the state in a cbx-ok/-bad/-warn span."""
    e = html.escape
    out = []
    for section in sections:
        cells = []
        for row in section.rows:
            parts = [f"<span class='cbx-{row.kind}'>{e(row.state)}</span>"] \
                if row.kind else []
            if row.detail:
                parts.append(e(row.detail))
            value = ": ".join(parts)
            if row.fix:
                value += f"<br><b>Fix:</b> {e(row.fix)}"
            cells.append(f"<tr><th>{e(row.label)}</th><td>{value}</td></tr>")
        out.append(f"<h4>{e(section.title)}</h4><table>{''.join(cells)}</table>")
    return "".join(out)
