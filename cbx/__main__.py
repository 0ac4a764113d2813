"""Command line: `python -m cbx <command>` (also installed as the `cbx` script).

Each subcommand is one `_add_<name>(subparsers)` function that registers its parser and
sets `func`, a callable taking the parsed arguments and returning the exit code. To add
a command, write such a function and list it in SUBCOMMANDS.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable


def _run_status(args: argparse.Namespace) -> int:
    from . import envcheck

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
                    "memory. Exit code 0 when ready, 1 when something must be fixed.",
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


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_status,
    _add_deload,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cbx",
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
    from .errors import CbxError

    try:
        return args.func(args)
    except CbxError as exc:   # expected failures: print code, message and fix, no traceback
        print(f"error [{exc.code}]: {exc.message}\nfix: {exc.solution}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
