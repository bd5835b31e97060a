"""`skysift run [--once] [--folder DIR | --camera SRC]`: the agent itself."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.cli.common import load
from agent.core.config import check_paths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="watch the folder (or read the camera), classify, geotag and record every frame",
        description="Run the agent until SIGTERM/SIGINT, or with --once process what the source "
        "holds now (e.g. an SD-card dump) and exit 0. One agent per storage directory: a second "
        "one exits 1 at once, naming the PID of the first.",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="process every file present now (waiting for files still being written), then exit",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--folder", metavar="DIR", help="watch DIR instead of source.folder")
    src.add_argument(
        "--camera", metavar="SRC", help="read SRC (device index, video file, rtsp:// or http:// URL)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from agent.service.agent import Agent, install_signal_handlers
    from agent.service.components import require_extras

    cfg = load(args)
    require_extras(cfg)  # before the model compiles: a missing extra is a setup error
    if args.folder:
        cfg.source.folder = Path(args.folder).absolute()
        cfg.source.camera = None
    elif args.camera:
        cfg.source.camera = int(args.camera) if args.camera.isdigit() else args.camera
        cfg.source.folder = None
    # After the overrides, before anything is created: a missing input never starts half-way.
    check_paths(cfg, args.config)
    agent = Agent(cfg)
    install_signal_handlers(agent)
    bar = None
    progress = None
    if args.once and not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(unit="frame", desc="skysift", file=sys.stderr, dynamic_ncols=True)

        def progress(done: int, total: int) -> None:
            bar.total = max(total, done)
            bar.n = done
            bar.refresh()

    try:
        return agent.run(once=args.once, progress=progress)
    finally:
        if bar is not None:
            bar.close()
