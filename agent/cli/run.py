"""`skysift run [--once] [--folder DIR | --camera SRC]`: the agent itself."""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from agent.cli.common import load, show_path
from agent.core.config import check_paths

#: the logger of the one-line-per-frame log (log.frames): its own name, so that a user can
#: tell it from the agent's other INFO lines, and filter on it in the journal
frame_log = logging.getLogger("skysift.frames")


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
    if cfg.log.frames:
        agent.ctx.bus.subscribe("frames_committed", _log_frames)
    bar = None
    progress = None
    redirect: Any = nullcontext()
    if args.once and not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        bar = tqdm(unit="frame", desc="skysift", file=sys.stderr, dynamic_ncols=True)
        # A log line written under the bar would leave a torn bar behind it on the terminal:
        # route the log through tqdm.write, which clears the bar, prints, and redraws it.
        redirect = logging_redirect_tqdm(tqdm_class=tqdm)

        def progress(done: int, total: int) -> None:
            bar.total = max(total, done)
            bar.n = done
            bar.refresh()

    try:
        with redirect:
            return agent.run(once=args.once, progress=progress)
    finally:
        if bar is not None:
            bar.close()


def frame_line(row: dict[str, Any]) -> str:
    """One committed frame as one log line: where it came from, and what the agent made of it."""
    where = f" at {row['lat']:.6f},{row['lon']:.6f}" if row.get("lat") is not None else ""
    src = show_path(row["source"]) if row.get("source") else "?"
    if row.get("status") != "classified":
        return f"{row.get('flight_id')} {src}: {row.get('status')} ({row.get('reason')}){where}"
    return (f"{row.get('flight_id')} {src}: {str(row.get('label')).upper()} "
            f"p_damaged={row.get('p_damaged') or 0:.3f} "
            f"tiles {row.get('damaged_tiles')}/{row.get('tiles')} damaged{where}")


def _log_frames(rows: list[dict[str, Any]], **_: Any) -> None:
    # Runs on the committer's thread (agent.core.events): a log call per row, nothing slower.
    for row in rows:
        frame_log.info("%s", frame_line(row))
