"""`skysift config check FILE` and `skysift config example`."""

from __future__ import annotations

import argparse
import sys

from agent.cli.common import show_path
from agent.core.config import check_paths, example_config, load_config
from agent.core.errors import ConfigError, MissingExtra
from agent.core.redact import redact_url


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config",
        help="check a configuration file or print the commented example",
        description="Validate a configuration before the agent runs on it, or print the fully "
        "commented example to start one from.",
    )
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = csub.add_parser(
        "check",
        help="validate FILE and that the extras it needs are installed; exit 0 if so, 1 with "
        "the errors if not",
        description="Validate FILE: unknown keys, values out of range and missing input paths, "
        "each named by its dotted key, and the extras (tensorflow, cloud) it needs installed.",
    )
    c.add_argument("file", metavar="FILE", help="YAML configuration file")
    c.set_defaults(func=_check)
    e = csub.add_parser(
        "example",
        help="print a fully commented example configuration",
        description="Print the example configuration: every key with its default and why.",
    )
    e.set_defaults(func=_example)


def _check(args: argparse.Namespace) -> int:
    from agent.service.components import require_extras

    try:
        cfg = load_config(args.file)
        check_paths(cfg, args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        require_extras(cfg)
    except MissingExtra as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 1
    camera = cfg.source.camera
    src = f"camera {redact_url(str(camera))}" if camera is not None else f"folder {show_path(cfg.watch_folder)}"
    print(f"{args.file}: OK (device_id={cfg.device_id}, source={src}, "
          f"storage={show_path(cfg.storage.dir)})")
    return 0


def _example(args: argparse.Namespace) -> int:
    sys.stdout.write(example_config())
    return 0
