"""The `skysift` command line. Each subcommand lives in its own module under agent/cli/,
which exposes ``register(subparsers)``; modules keep heavy imports inside their handlers so
that `skysift --help` and `skysift status` start fast."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from agent import __version__
from agent.core.errors import SkysiftError

COMMAND_MODULES = [
    "classify",
    "run",
    "flights",
    "config_cmd",
    "model",
    "bench",
    "sync",
    "status",
    "service",
    "report",
    "station",
    "demo",
]

log = logging.getLogger("skysift")


def _add_common(parser: argparse.ArgumentParser, top: bool) -> None:
    """-c/--config and --log-level. On the top parser they carry the defaults; on a subcommand
    they default to SUPPRESS, so that they set the value only when given there, and then win
    over the top-level one (argparse copies a subcommand's namespace over the top one)."""
    default = os.environ.get("SKYSIFT_CONFIG") if top else argparse.SUPPRESS
    parser.add_argument(
        "-c",
        "--config",
        default=default,
        help="YAML configuration file (default: $SKYSIFT_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=None if top else argparse.SUPPRESS,
        help="override the configured log level",
    )


def _subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every subcommand parser below ``parser``, nested ones (``config check``) included."""
    out: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases repeat a parser
                out += [child, *_subcommands(child)]
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skysift",
        description="On-board damage classification for disaster response.",
    )
    parser.add_argument("--version", action="version", version=f"skysift {__version__}")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"agent.cli.{name}").register(sub)
    # People type `skysift run -c FILE --once`: accept the options after the subcommand too.
    for child in _subcommands(parser):
        _add_common(child, top=False)
    return parser


def setup_logging(level: str) -> None:
    # journald adds the time and the unit; on a terminal the time helps, so keep it short.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if sys.stderr.isatty():
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr, force=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level or "info")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SkysiftError as exc:
        print(f"skysift: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `skysift frames --json | head`: the reader left; that is not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
