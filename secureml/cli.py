"""The ``secureml`` command line.

Each sub-command lives in its own module under :mod:`secureml.commands` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the parsed
arguments and returning an exit code. Modules are discovered automatically, so a new command is a
new file, and a missing optional dependency disables only the commands that need it.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from typing import Sequence

from secureml import __version__
from secureml.errors import SecureMLError

log = logging.getLogger("secureml")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI, or with ``only`` (a command module's name) just that command: `secureml
    predict` then starts without importing every other command's dependencies (torch for the
    attacks), which took seconds on a loaded machine."""
    parser = argparse.ArgumentParser(
        prog="secureml",
        description="Double-blind KRR prediction of molecular properties, and leakage measurement.",
    )
    parser.add_argument("--version", action="version", version=f"secureml {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import secureml.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or (only is not None and info.name != only):
            continue
        module = importlib.import_module(f"secureml.commands.{info.name}")
        module.register(sub)
    return parser


def _command_module(argv: Sequence[str]) -> str | None:
    """The command module named by the first non-option argument, if there is such a module."""
    import secureml.commands as commands

    word = next((a for a in argv if not a.startswith("-")), None)
    if word is None:
        return None
    name = word.replace("-", "_")
    known = {m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")}
    return name if name in known else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_module(argv))
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except SecureMLError as exc:
        # User-facing failures (bad input, protocol errors) get one clear line, not a traceback.
        print(f"secureml {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
