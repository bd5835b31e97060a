"""`skysift demo [--out DIR] [--n N]`: write a sample flight to try the agent on (see
agent.bench.demo for what the frames are)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.cli.common import load, show_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="write a sample flight of synthetic aerial frames with GPS and camera pose",
        description="Write N synthetic 12 MP aerial frames (made of the shared damage tiles) to "
        "DIR/demo-survey/, as a drone surveying one block would take them: a lawnmower pattern "
        "at 50 m above ground with ~70 %% overlap, EXIF GPS and a DJI-style XMP camera pose. "
        "DIR defaults to the watched folder, so `skysift run --once` then `skysift report` map them.",
    )
    p.add_argument("--out", "-o", type=Path, default=None, metavar="DIR",
                   help="folder to write to (default: source.folder, ./inbox unless configured)")
    p.add_argument("--n", type=int, default=24, metavar="N", help="frames (default 24)")
    p.add_argument("--oblique", action="store_true",
                   help="camera pitched -70 degrees (20 off nadir) instead of straight down")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="aerial tiles folder with damaged/ and undamaged/ (default: the shared set)")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from agent.bench.demo import FLIGHT, write_demo
    from agent.bench.options import DEFAULT_DATA

    data = args.data or DEFAULT_DATA
    if args.n < 1:
        print("skysift demo: --n must be at least 1", file=sys.stderr)
        return 2
    if not (data / "damaged").is_dir():
        print(f"skysift demo: no aerial tiles at {show_path(data)} (give --data DIR)", file=sys.stderr)
        return 2
    watched = load(args).watch_folder
    out = args.out or watched or Path("inbox")
    paths = write_demo(data, out, args.n, pitch=-70.0 if args.oblique else -90.0)
    print(f"wrote {len(paths)} frames of flight {FLIGHT} to {show_path(out / FLIGHT)}")
    folder = "" if watched is not None and out.absolute() == watched.absolute() else f" --folder {show_path(out)}"
    print(f"next: skysift run --once{folder} && skysift report {FLIGHT}")
    return 0
