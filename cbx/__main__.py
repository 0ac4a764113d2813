"""Command line: `python -m cbx <command>` (also installed as the `cbx` script).

Each subcommand is one `_add_<name>(subparsers)` function that registers its parser and
sets `func`, a callable taking the parsed arguments and returning the exit code. To add
a command, write such a function and list it in SUBCOMMANDS.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Callable


def _run_status(args: argparse.Namespace) -> int:
    from . import envcheck, options

    options.device(args.device)     # a misspelt name is invalid_setting, not a READY
    report = envcheck.status(model_dir=args.model_dir, device=args.device,
                             import_modules=args.deep)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report)
        print("\n(This command runs in its own process: a model loaded in a notebook kernel "
              "is not shown here; use cbx.status() in that notebook.)")
    return 0 if report.ok else 1


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="libraries, weight files, device and memory",
        description="Check the installation: required libraries and versions, whether each "
                    "model variant's weight files are present and whole, the device and "
                    "memory. Exit code 0 when ready, 1 when something must be fixed "
                    "(the --device asked for included), 16 for a --device that names no "
                    "device.",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--model-dir", default=None,
                   help="model cache folder (default: $CBX_MODEL_DIR, else model_cache/)")
    p.add_argument("--device", default="auto",
                   help="device to check: auto (default), cuda, cuda:N, mps or cpu")
    p.add_argument("--deep", action="store_true",
                   help="really import every library (slower; catches broken installs)")
    p.set_defaults(func=_run_status)


def _run_deload(args: argparse.Namespace) -> int:
    from .holds import deload

    outcomes = deload(timeout=args.timeout, force=args.force)
    if args.json:
        print(json.dumps(outcomes, indent=2))
        return 0 if all(o["action"] != "no answer" for o in outcomes) else 1
    if not outcomes:
        print("No kernel holds a model: nothing to free.")
        return 0
    for o in outcomes:
        line = f"{o['session']}: {o['variant']} on {o['device']} -> {o['action']}"
        report = o.get("report")
        if report:
            freed = ", ".join(f"{k.removesuffix('_mb')} {v:.0f} MiB"
                              for k, v in report["freed"].items())
            line += f" (freed {freed}" + ("" if report["released"] else
                                          "; some modules still alive") + ")"
        if o.get("hint"):
            line += f"\n  {o['hint']}"
        print(line)
    return 0 if all(o["action"] != "no answer" for o in outcomes) else 1


def _add_deload(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deload",
        help="free the model held by running kernels (files are kept)",
        description="Ask every kernel that holds a Chatterbox model to unload it and report "
                    "the memory freed. Weights, voices and outputs on disk are not touched. "
                    "A kernel that does not answer (busy or hung) is stopped with --force.",
    )
    p.add_argument("--timeout", type=float, default=15.0,
                   help="seconds to wait for each kernel to answer (default 15)")
    p.add_argument("--force", action="store_true",
                   help="stop kernels that do not answer in time (frees their memory)")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(func=_run_deload)


# --------------------------------------------------------------------------- speak

def _read_text(args: argparse.Namespace) -> str:
    """The words to speak: the argument, or the -f file ("-" = standard input), read
    through the projects' capped text reader (a pipe or /dev/zero is refused)."""
    from .errors import InvalidText
    from .longform import sources

    if (args.text is None) == (args.file is None):
        raise InvalidText("Text was given both as an argument and with -f."
                          if args.text is not None else "No text was given.",
                          'Give it one way: cbx speak "Some text" ...  or  '
                          'cbx speak -f chapter.txt ...')
    if args.text is not None:
        return args.text
    if args.file == "-":
        return sources.read_stream(sys.stdin.buffer)
    return sources.read_text(args.file)


class _ProgressBar:
    """A tqdm bar on stderr for speak()'s progress: chunk i/n, elapsed, time left.
    Only on a terminal: piped or logged output gets no control characters."""

    _STAGES = {"loading": "loading model", "voice": "preparing voice",
               "tokens": "generating", "chunk_done": "generating"}

    def __init__(self, stream):
        import shutil

        from tqdm import tqdm

        # a terminal that reports no size (0 x 0) gets no bar at all from tqdm's own
        # measurement; shutil falls back to 80 x 24
        size = shutil.get_terminal_size()
        self._bar = tqdm(total=None, file=stream, unit="chunk", desc="starting",
                         disable=False,
                         ncols=size.columns, nrows=size.lines,
                         bar_format="{desc}: chunk {n_fmt}/{total_fmt} |{bar}| "
                                    "{elapsed} elapsed{postfix}")

    def __call__(self, p) -> None:
        if p.total and self._bar.total != p.total:
            self._bar.total = p.total
        self._bar.n = p.chunk if p.stage == "chunk_done" else max(p.chunk - 1, 0)
        self._bar.set_description_str(self._STAGES.get(p.stage, p.stage), refresh=False)
        extra = []
        if p.stage == "tokens" and p.tokens:
            extra.append(f"{p.tokens} tokens")
        if p.eta is not None:
            extra.append(f"about {self._bar.format_interval(p.eta)} left")
        self._bar.set_postfix_str(", ".join(extra), refresh=False)   # tqdm adds ", "
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _silence_library_bars() -> None:
    """Upstream's per-chunk "Sampling 0/1000" bars (the token cap, not progress) and
    transformers' notices would bury cbx's own lines. Both libraries read these
    variables when first imported, so this runs before anything imports them; our own
    bar passes disable=False."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@contextlib.contextmanager
def _quiet_upstream():
    """Keep stdout for the saved path alone (the watermarker prints to it) and leave
    out the libraries' deprecation notices, which no user can act on."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _settings_from(args: argparse.Namespace) -> dict:
    from .settings import SETTINGS

    return {name: getattr(args, name) for name in SETTINGS
            if getattr(args, name) is not None}


def _run_speak(args: argparse.Namespace) -> int:
    from . import options, speak
    from .audio import format_for, with_suffix
    from .engine.synth import sidecar_path
    from .variants import get_variant
    from .voices import resolve_voice

    _silence_library_bars()
    # Everything that can be checked without the model is checked first, so a typo
    # costs a second, not a model load.
    text = _read_text(args)
    seed = options.seed(_seed(args.seed))
    variant = get_variant(args.variant).name if args.variant else None
    output = with_suffix(Path(args.output) if args.output else _default_output())
    format_for(output)          # an unknown suffix is refused before the model loads
    unique = not (args.output or args.overwrite)    # only cbx's own name is numbered
    _check_output(output, overwrite=args.overwrite, unique=unique)
    if args.subtitles and not unique:
        _check_output(_subtitles_path(output, args.subtitles), overwrite=args.overwrite,
                      unique=False)
    voice = resolve_voice(args.voice, variant or "original") if args.voice else None
    with _quiet_upstream():
        bar = _ProgressBar(sys.stderr) if sys.stderr.isatty() else None
        try:
            result = speak(text, voice, variant=variant, device=args.device,
                           dtype=args.dtype, seed=seed, language=args.language,
                           max_chunk_chars=args.max_chunk_chars, model_dir=args.model_dir,
                           progress=bar, **_settings_from(args))
        finally:
            if bar is not None:
                bar.close()
    saved = result.save(output, overwrite=args.overwrite, unique=unique)
    written = [saved]
    if args.subtitles:     # named after the audio as saved (cbx-speak-2.wav: -2.srt)
        written.append(result.save(_subtitles_path(saved, args.subtitles),
                                   overwrite=args.overwrite or unique))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if sys.stderr.isatty():
        print(f"{result.duration:.1f} s of audio, {len(result.chunks)} chunk(s), seed "
              f"{result.seed}, in {result.timings.get('total', 0):.1f} s; settings in "
              f"{sidecar_path(saved).name}", file=sys.stderr)
    print("\n".join(map(str, written)))
    return 0


def _subtitles_path(audio_path: Path, fmt: str) -> Path:
    """The subtitles beside the audio: take.mp3 -> take.srt."""
    return audio_path.with_suffix(f".{fmt}")


def _seed(text: str | None):
    """A whole number as int; anything else goes to speak() as given, whose check then
    says what a seed must be (one message for the notebook and the command)."""
    return int(text) if text is not None and text.strip().isdigit() else text


def _default_output() -> Path:
    from .paths import output_dir

    return output_dir() / "cbx-speak.wav"


def _check_output(output: Path, *, overwrite: bool, unique: bool) -> None:
    """Refuse before the model loads what would fail after it: a taken -o name without
    --overwrite (output_exists) or a folder that cannot be made or written to
    (output_not_saved)."""
    from .files import check_writable
    from .engine.synth import refuse_existing

    if not (overwrite or unique):
        refuse_existing(output)
    check_writable(output.parent)


def _add_speak(sub: argparse._SubParsersAction) -> None:
    from .audio import FORMATS
    from .settings import DTYPES, SETTINGS

    p = sub.add_parser(
        "speak",
        help="speak text into an audio file",
        description="Speak text (any length: it is split into sentence chunks) in a "
                    "cloned voice and save it with a JSON sidecar of the settings, through "
                    "the same cbx.speak() the notebook uses. Prints the saved path. "
                    "Exit status: 0 ok; on an error its code, message and fix are printed "
                    "and the status names the error (see README, Troubleshooting).",
    )
    p.add_argument("text", nargs="?", help="the words to speak (or use -f)")
    p.add_argument("-f", "--file", help="read the text from this UTF-8 file ('-' = stdin)")
    p.add_argument("--voice", help="a reference clip's path or a saved voice's name "
                                   "(default: the model's built-in voice)")
    p.add_argument("-o", "--output",
                   help=f"audio file to write ({', '.join(FORMATS)}), its settings "
                        "beside it (out.mp3 -> out.mp3.json); an existing one is refused "
                        "unless --overwrite (default: outputs/cbx-speak.wav, numbered "
                        "cbx-speak-2.wav, ... when taken)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output file and its settings file if they exist")
    p.add_argument("--subtitles", choices=("srt", "vtt"),
                   help="also write subtitles timed from the audio beside it "
                        "(out.mp3 -> out.srt) and print their path")
    p.add_argument("--seed", help="random seed: the same seed gives the same audio")
    p.add_argument("--variant", help="original (default), turbo or multilingual")
    p.add_argument("--language", help="language code for the multilingual variant")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", help=f"{', '.join(DTYPES)} (default float32)")
    p.add_argument("--max-chunk-chars", type=int, default=300,
                   help="longest chunk in characters (default 300)")
    p.add_argument("--model-dir", help="model cache folder (default: $CBX_MODEL_DIR, "
                                       "else model_cache/)")
    for setting in SETTINGS.values():
        p.add_argument(f"--{setting.name.replace('_', '-')}", dest=setting.name,
                       type=float, help=f"{setting.help} ({setting.low}-{setting.high})")
    p.set_defaults(func=_run_speak)


# --------------------------------------------------------------------------- voices

def _run_voices(args: argparse.Namespace) -> int:
    from .paths import voice_dir
    from .voices import list_voices

    voices = list_voices()
    if args.json:
        print(json.dumps([{"name": v.name, "path": str(v.path), "seconds": v.duration,
                           "sample_rate": v.sample_rate, "channels": v.channels,
                           "created": v.created} for v in voices], indent=2))
        return 0
    if not voices:
        print(f"No saved voices in {voice_dir()}. A clip given to `cbx speak --voice "
              f"clip.wav` or uploaded on the dashboard is saved there.")
        return 0
    width = max(len(v.name) for v in voices)
    for v in voices:
        print(f"{v.name:<{width}}  {v.duration:5.1f} s  {v.sample_rate} Hz  {v.path}")
    return 0


def _add_voices(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("voices", help="list the saved voices",
                       description="List the voices saved in the voice library "
                                   "($CBX_VOICE_DIR, else voices/): use a name with "
                                   "`cbx speak --voice NAME`.")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=_run_voices)


# --------------------------------------------------------------------------- serve

def _run_serve(args: argparse.Namespace) -> int:
    from .server import serve

    _silence_library_bars()
    return serve(host=args.host, port=args.port, device=args.device)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from .server.config import API_KEY_ENV, DEFAULT_HOST, DEFAULT_PORT

    p = sub.add_parser(
        "serve",
        help="an OpenAI-compatible speech server (Open WebUI, SillyTavern, ...)",
        description="Serve OpenAI's /v1/audio/speech, /v1/models, /v1/audio/voices and "
                    "/health over cbx, so programs that speak OpenAI's API can use your "
                    f"voices. Listens on {DEFAULT_HOST} unless told otherwise; any other "
                    f"address needs {API_KEY_ENV} (see README).")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.set_defaults(func=_run_serve)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_status,
    _add_deload,
    _add_speak,
    _add_voices,
    _add_serve,
]


def build_parser() -> argparse.ArgumentParser:
    # `cbx ...` when run as the console script, `python -m cbx ...` otherwise
    prog = "cbx" if Path(sys.argv[0]).stem == "cbx" else "python -m cbx"
    parser = argparse.ArgumentParser(prog=prog,
                                     description="Chatterbox Studio command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    from .errors import EXIT_INTERRUPTED, CbxError, exit_status

    try:
        return args.func(args)
    except CbxError as exc:   # expected failures: print code, message and fix, no traceback
        print(f"error [{exc.code}]: {exc.message}\nfix: {exc.solution}", file=sys.stderr)
        return exit_status(exc)
    except KeyboardInterrupt:
        print("interrupted: nothing was saved.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
