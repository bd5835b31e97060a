"""`skysift flights [--json]` and `skysift frames FLIGHT [--json]`: what the database holds.

``--json`` writes JSON lines (one object per line, every column), as ``classify --json`` does.
The JSON array these commands wrote in 0.1 is ``--json-array``, deprecated (README "Changelog").
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent.cli.common import REMOVED_IN, deprecated, load, show_path, write_json_lines
from agent.store.columns import frame_columns

#: the columns of the `skysift frames` table (--json gives every column)
TABLE_COLUMNS = frame_columns(
    "frame_id", "status", "reason", "label", "p_damaged", "tiles", "damaged_tiles",
    "lat", "lon", "geo_source", "captured_at", "source",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flights",
        help="list flights with their frame counts",
        description="One row per flight in <storage.dir>/skysift.db: when it started and ended, "
        "its frames, how many were damaged or rejected, and where they came from.",
    )
    _json_options(p)
    p.set_defaults(func=_flights)
    f = sub.add_parser(
        "frames",
        help="list the frames of one flight",
        description="The frames of FLIGHT, in capture order: status, label, p_damaged, tiles, "
        "position. While the agent runs, run it again to see new frames (or set log.frames).",
    )
    f.add_argument("flight", nargs="?", metavar="FLIGHT", help="flight id (see `skysift flights`)")
    # 0.1 spelled it --flight ID; kept as an alias, it means the same
    f.add_argument("--flight", dest="flight_opt", metavar="FLIGHT", help="the same as FLIGHT")
    _json_options(f)
    f.add_argument("--limit", type=int, default=None, metavar="N", help="at most N frames")
    f.set_defaults(func=_frames)


def _json_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="JSON lines (every column) instead of a table")
    p.add_argument(
        "--json-array", action="store_true",
        help=f"deprecated: one JSON array, as 0.1 wrote with --json (goes in {REMOVED_IN})",
    )


def _open_store(args: argparse.Namespace):
    from agent.core.errors import SkysiftError
    from agent.store.db import Store

    cfg = load(args)
    if not cfg.db_path.exists():
        raise SkysiftError(f"no database at {show_path(cfg.db_path)} (has `skysift run` been started?)")
    return Store(cfg.db_path, readonly=True)


def _flights(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        rows = store.flights()
    finally:
        store.close()
    cols = ("flight_id", "started_at", "ended_at", "frames", "damaged", "rejected", "source")
    return _emit(rows, cols, args, "skysift flights")


def _frames(args: argparse.Namespace) -> int:
    from agent.core.errors import SkysiftError

    if args.flight and args.flight_opt and args.flight != args.flight_opt:
        raise SkysiftError(f"two flights given: {args.flight!r} and --flight {args.flight_opt!r}")
    flight = args.flight or args.flight_opt
    if not flight:
        raise SkysiftError("which flight? `skysift frames FLIGHT` (see `skysift flights`)")
    store = _open_store(args)
    try:
        if store.flight(flight) is None:
            raise SkysiftError(f"no flight {flight!r} (see `skysift flights`)")
        rows = store.frames(flight, limit=args.limit)
    finally:
        store.close()
    return _emit(rows, TABLE_COLUMNS, args, "skysift frames FLIGHT")


def _emit(rows: list[dict], cols: tuple[str, ...] | list[str], args: argparse.Namespace,
          command: str) -> int:
    """Every column as JSON lines (or the deprecated array), or the chosen columns as a table."""
    if args.json_array:
        deprecated(f"{command} --json-array", f"{command} --json (JSON lines)")
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.json:
        write_json_lines(rows)
        return 0
    # A table is for reading: the stored absolute source paths, shown as show_path does.
    _table([{c: show_path(r[c]) if c == "source" and r.get(c) else r.get(c) for c in cols}
            for r in rows], cols)
    return 0


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _table(rows: list[dict], cols: tuple[str, ...] | list[str]) -> None:
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    if not rows:
        print("(none)")
