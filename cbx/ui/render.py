"""HTML fragments for the dashboard: error cards, the health panel, download links.

Pure functions of data (no widgets, no model) so their content is tested directly and
the page looks the same in Voila, JupyterLab and a test.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Iterable

from ..errors import UnexpectedError
from ..paths import REPO_ROOT
from ..report import CSS_RULES, to_html
from ..state import ModelInfo
from ..variants import VARIANTS

e = html.escape

STATE_LABELS = {
    "not_loaded": "Not loaded",
    "loading": "Loading...",
    "ready": "Ready",
    "generating": "Generating...",
    "unloading": "Unloading...",
}

CSS = """
<style>
.cbx-app { max-width: 1280px; margin: 0 auto; font-family: system-ui, -apple-system,
  'Segoe UI', Roboto, sans-serif; color: #1f2933; }
.cbx-header { background: linear-gradient(90deg, #243b53, #334e68); color: #fff;
  padding: 14px 20px; border-radius: 10px; margin-bottom: 12px; }
.cbx-header h1 { margin: 0; font-size: 22px; font-weight: 600; color: #fff; }
.cbx-header p { margin: 4px 0 0; font-size: 13px; color: #d9e2ec; }
.cbx-card { background: #fff; border: 1px solid #d9e2ec; border-radius: 10px;
  padding: 12px 16px !important; margin: 0 0 12px 0 !important; box-shadow: 0 1px 2px rgba(0,0,0,.04); }
.cbx-card h3 { margin: 0 0 8px 0; font-size: 15px; font-weight: 600; color: #243b53;
  text-transform: uppercase; letter-spacing: .04em; }
.cbx-hint { color: #627d98; font-size: 12px; line-height: 1.4; }
.cbx-tag-group { display: inline-flex; flex-wrap: wrap; align-items: center; gap: 4px; margin-right: 12px; }
.cbx-tag-group-label { color: #627d98; font-size: 12px; margin-right: 2px; }
.cbx-chunk-row { border-top: 1px solid #e4e7eb; padding: 6px 0; }
.cbx-chunk-flagged { background: #fffbea; }
.cbx-chunk-damaged { background: #fff5f5; }
.cbx-error { border: 1px solid #f5c2c7; border-left: 5px solid #b00020; background: #fff5f5;
  border-radius: 8px; padding: 10px 14px; margin: 6px 0; }
.cbx-error .cbx-code { font-family: ui-monospace, Menlo, Consolas, monospace; background: #b00020;
  color: #fff; padding: 1px 7px; border-radius: 4px; font-size: 12px; }
.cbx-error .cbx-msg { margin: 6px 0 4px; }
.cbx-error .cbx-fix { margin: 0; }
.cbx-error pre { max-height: 240px; overflow: auto; background: #1f2933; color: #f0f4f8;
  padding: 8px; border-radius: 6px; font-size: 11px; }
.cbx-status { padding: 6px 10px; background: #f0f4f8; border-radius: 6px; font-size: 13px; }
.cbx-pill { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
  font-weight: 600; }
.cbx-pill-ready { background: #e3f9e5; color: #137333; }
.cbx-pill-busy { background: #fff3c4; color: #8d6e00; }
.cbx-pill-off { background: #e4e7eb; color: #52606d; }
.cbx-downloads a { display: inline-block; margin-right: 10px; padding: 5px 12px;
  border-radius: 6px; background: #334e68; color: #fff !important; text-decoration: none;
  font-size: 13px; }
.cbx-downloads a.cbx-secondary { background: #e4e7eb; color: #243b53 !important; }
.cbx-history-row { border-top: 1px solid #e4e7eb; padding: 6px 0 !important; }
.cbx-primary button, button.cbx-primary { font-weight: 600; }
""" + CSS_RULES + "</style>\n"   # the health table's rules, shared with cbx.status() in a notebook


def shown_path(path) -> str:
    """A path as the page shows it: relative to the checkout when inside it
    ("outputs/take.wav"), so no page or screenshot shows where the checkout lives; a
    folder the user chose elsewhere (CBX_OUTPUT_DIR, ...) in full, as they know it."""
    path = Path(path)
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) \
        else str(path)


def download_link(url: str, filename: str, label: str, css_class: str,
                  title: str = "") -> str:
    """An anchor that downloads `filename` from the server (never the bytes inline)."""
    return (f"<a class='{css_class}' download='{e(filename)}' "
            f"title='{e(title or 'Download ' + filename)}' href='{e(url)}'>{e(label)}</a>")


def header_html() -> str:
    return ("<div class='cbx-header'><h1>Chatterbox Studio</h1>"
            "<p>Clone a voice from a short clip and turn any text into speech, on your own "
            "machine.</p></div>")


def error_card(error) -> str:
    """Code, message and solution of a taxonomy error; traceback behind a toggle."""
    if error is None:
        return ""
    code, message, solution = error.code, error.message, error.solution
    parts = [f"<div class='cbx-error' data-code='{e(code)}'>",
             f"<span class='cbx-code'>{e(code)}</span>",
             f"<p class='cbx-msg'>{e(message)}</p>"]
    if solution:
        parts.append(f"<p class='cbx-fix'><b>How to fix:</b> {e(solution)}</p>")
    details = error.details
    if details:
        parts.append(f"<p class='cbx-hint'>{e(details)}</p>")
    tb = error.traceback if isinstance(error, UnexpectedError) else None
    if tb:
        parts.append("<details><summary>Show technical details (traceback)</summary>"
                     f"<pre>{e(tb)}</pre></details>")
    parts.append("</div>")
    return "".join(parts)


def errors_html(errors: Iterable) -> str:
    return "".join(error_card(err) for err in errors)


def state_pill(state: str) -> str:
    label = STATE_LABELS.get(state, state.replace("_", " ").capitalize())
    kind = "ready" if state == "ready" else ("off" if state == "not_loaded" else "busy")
    return f"<span class='cbx-pill cbx-pill-{kind}' data-state='{e(state)}'>{e(label)}</span>"


def model_rows(model: ModelInfo, state: str) -> list[tuple[str, str]]:
    rows = [("State", state_pill(state))]
    if model.variant:
        label = VARIANTS[model.variant].label if model.variant in VARIANTS else model.variant
        rows.append(("Variant", e(label)))
        rows.append(("Device", e(f"{model.device} ({model.dtype})")))
        seconds = model.load_seconds
        if isinstance(seconds, (int, float)):
            rows.append(("Load time", f"{seconds:.1f} s"))
        watermark = model.watermark or "on"
        rows.append(("Watermark", "on (Perth)" if watermark == "on" else
                     f"<span class='cbx-warn'>{e(watermark)}</span>"))
    return rows


def health_html(report, model: ModelInfo, state: str, voice_label: str,
                health_error=None) -> str:
    """The health panel: the model as the page knows it now, then the status report's
    environment sections (libraries, weights per variant, device and memory), rendered
    from the same rows as `python -m cbx status` and cbx.status()."""
    rows = model_rows(model, state) + [("Voice", e(voice_label))]
    idle = model.idle_unload_minutes
    if isinstance(idle, (int, float)):
        rows.append(("Auto-unload", "off" if idle <= 0 else f"after {idle:g} min idle"))
    out = ["<div class='cbx-health'><h4>Model</h4><table>",
           *(f"<tr><th>{e(label)}</th><td>{value}</td></tr>" for label, value in rows),
           "</table>"]
    if report is None:
        out.append(f"<p class='cbx-bad'>Health check unavailable.</p>{error_card(health_error)}")
    else:
        out.append(to_html(report.environment_sections()))
        out.append(f"<p class='cbx-hint'>Checked {e(str(report.created_at)[11:19])} - models "
                   f"in {e(shown_path(report.model_dir))}</p>")
    out.append("</div>")
    return "".join(out)


def text_info_html(info: dict) -> str:
    chars, chunks, seconds = info.get("chars", 0), info.get("chunks", 0), info.get("seconds", 0)
    if not chars:
        return "<span class='cbx-hint'>0 characters - type or paste any amount of text.</span>"
    minutes = f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"
    counted = ("counting chunks..." if chunks is None else
               f"<b>{chunks}</b> chunk{'s' if chunks != 1 else ''}")
    return (f"<span class='cbx-hint cbx-textinfo'><b>{chars}</b> characters &middot; "
            f"{counted} &middot; about "
            f"<b>{minutes}</b> of speech</span>")


def _clock(seconds) -> str:
    seconds = max(0, int(round(float(seconds))))
    return f"{seconds // 60}:{seconds % 60:02d}"


def progress_text(progress: dict | None) -> str:
    if not progress:
        return ""
    chunk, total = progress.get("chunk", 0), progress.get("total", 0)
    parts = [f"Chunk {max(chunk, 1)} of {total}" if total else "Starting"]
    if progress.get("tokens"):
        parts.append(f"{progress['tokens']} tokens")
    parts.append(f"elapsed {_clock(progress.get('elapsed', 0))}")
    eta = progress.get("eta")
    parts.append(f"about {_clock(eta)} left" if eta is not None else "estimating time left")
    return " · ".join(parts)


def progress_fraction(progress: dict | None) -> float:
    """0..1 for the bar: finished chunks plus a token-based share of the current one."""
    if not progress or not progress.get("total"):
        return 0.0
    total = progress["total"]
    chunk = progress.get("chunk", 0)
    if progress.get("stage") == "chunk_done":
        done = chunk
    else:
        # a chunk of speech is usually a few hundred tokens; cap the in-chunk share
        done = max(chunk - 1, 0) + min(progress.get("tokens", 0) / 400.0, 0.95)
    return max(0.0, min(done / total, 1.0))


def download_links(entry, compact: bool = False) -> str:
    """The saved WAV and its settings sidecar, as links the server serves from the
    output folder; nothing to download when the result could not be saved."""
    if entry is None:
        return ""
    if entry.url is None:
        return "<span class='cbx-hint'>Not saved, so nothing to download.</span>"
    wav = download_link(entry.url, entry.filename, "WAV" if compact else "Download WAV",
                        "cbx-download-wav")
    side = "" if entry.sidecar_url is None else download_link(
        entry.sidecar_url, entry.sidecar_filename, "JSON" if compact else "Settings (JSON)",
        "cbx-secondary cbx-download-json",
        "The text, voice, seed and settings of this result")
    subtitles = "" if entry.subtitles_url is None else download_link(
        entry.subtitles_url, f"{Path(entry.filename).stem}.srt",
        "SRT" if compact else "Subtitles (SRT)", "cbx-secondary cbx-download-srt",
        "Subtitles timed from this audio")
    return f"<span class='cbx-downloads'>{wav}{side}{subtitles}</span>"


def result_summary(entry) -> str:
    if entry is None:
        return "<span class='cbx-hint'>Your audio will appear here.</span>"
    bits = [f"<b>#{entry.number}</b> {entry.duration:.1f} s of audio",
            f"voice <i>{e(entry.voice)}</i>", f"seed {entry.seed}"]
    if entry.generation_seconds:
        bits.append(f"made in {entry.generation_seconds:.1f} s")
    if entry.first_audio_seconds:
        bits.append(f"first audio after {entry.first_audio_seconds:.1f} s")
    saved = (f"<br><span class='cbx-hint'>Saved as {e(shown_path(entry.saved_path))}</span>"
             if entry.saved_path else "")
    notes = "".join(f"<br><span class='cbx-warn cbx-result-note'>{e(note)}</span>"
                    for note in entry.notes)
    return " &middot; ".join(bits) + saved + notes


def history_row_html(entry) -> str:
    gen = f"{entry.generation_seconds:.1f} s" if entry.generation_seconds else "-"
    return (f"<div><b>#{entry.number}</b> <span class='cbx-hint'>{e(entry.created)}</span> "
            f"&ldquo;{e(entry.snippet)}&rdquo;<br><span class='cbx-hint'>voice "
            f"{e(entry.voice)} &middot; seed {entry.seed} &middot; {entry.duration:.1f} s audio "
            f"&middot; generated in {gen}</span></div>")
