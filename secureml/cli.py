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
from typing import Any, Sequence

from secureml import __version__
from secureml.errors import SecureMLError

log = logging.getLogger("secureml")


def _command_modules() -> dict[str, str]:
    """Command name (``learning-curve``) -> module name (``learning_curve``)."""
    import secureml.commands as commands

    return {info.name.replace("_", "-"): info.name
            for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name)
            if not info.name.startswith("_")}


def _summary(module: str) -> str:
    """First line of a command module's docstring, without its ``secureml X``: prefix."""
    try:
        mod = importlib.import_module(f"secureml.commands.{module}")
    except ImportError as exc:  # a light install without the command's optional dependency
        return f"(unavailable here: {exc.name or exc} is not installed; pip install 'secureml[full]')"
    line = (mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else ""
    return line.split(":", 1)[1].strip() if line.startswith("``secureml") and ":" in line else line


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to every option's help that does not state its default already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" not in text.lower()
            and action.default not in (None, False, argparse.SUPPRESS, [])
            and action.option_strings
            and action.nargs != 0
        ):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """Every sub-command parser shows defaults (unless the command picks its own formatter)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser(only: str | None = None, summaries: bool = False) -> argparse.ArgumentParser:
    """The CLI parser with every command (Python callers, tests). ``only``: just that command is
    imported and built, so a command starts without importing any other command's dependencies
    (torch, TenSEAL ...); ``summaries``: commands are only listed, by their docstrings' first
    lines (what ``secureml --help`` shows, in ~0.5 s)."""
    parser = argparse.ArgumentParser(
        prog="secureml",
        description="Double-blind KRR prediction of molecular properties, and leakage measurement.",
    )
    parser.add_argument("--version", action="version", version=f"secureml {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in _command_modules().items():
        if only is not None and name != only:
            continue
        if summaries:
            sub.add_parser(name, help=_summary(module), add_help=False)
            continue
        try:
            mod = importlib.import_module(f"secureml.commands.{module}")
            mod.register(sub)
        except ImportError as exc:
            if only is not None:
                raise SecureMLError(f"`secureml {name}` needs {exc.name or exc}, which is not installed "
                                    "(pip install 'secureml[full]')") from None
            sub.add_parser(name, help=_summary(module), add_help=False)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    names = _command_modules()
    for tok in argv:
        if tok in names:
            return tok
        if not tok.startswith("-"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    try:
        parser = build_parser(command, summaries=command is None)
    except SecureMLError as exc:
        print(f"secureml: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    # INFO for normal runs (progress lines, one line per served session); -v: debug
    logging.basicConfig(level=logging.WARNING if args.verbose < 2 else logging.DEBUG,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    # secureml's own loggers at INFO (DEBUG with -v); other libraries stay at WARNING
    logging.getLogger("secureml").setLevel(logging.INFO if args.verbose == 0 else logging.DEBUG)
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
