"""`skysift flights [--json]` and `skysift frames --flight ID [--json]`: what the database holds."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from agent.cli.common import load
from agent.store.columns import frame_columns

#: the columns of the `skysift frames` table (--json gives every column)
TABLE_COLUMNS = frame_columns(
    "frame_id", "status", "reason", "label", "p_damaged", "tiles", "damaged_tiles",
    "lat", "lon", "geo_source", "captured_at", "source",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flights", help="list flights with their frame counts")
    p.add_argument("--json", action="store_true", help="JSON array instead of a table")
    p.set_defaults(func=_flights)
    f = sub.add_parser("frames", help="list the frames of one flight")
    f.add_argument("--flight", required=True, metavar="ID", help="flight id (see `skysift flights`)")
    f.add_argument("--json", action="store_true", help="JSON array (every column) instead of a table")
    f.add_argument("--limit", type=int, default=None, help="at most this many frames")
    f.set_defaults(func=_frames)


def _open_store(args: argparse.Namespace):
    from agent.core.errors import SkysiftError
    from agent.store.db import Store

    cfg = load(args)
    if not cfg.db_path.exists():
        raise SkysiftError(f"no database at {cfg.db_path} (has `skysift run` been started?)")
    return Store(cfg.db_path, readonly=True)


def _flights(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        rows = store.flights()
    finally:
        store.close()
    cols = ("flight_id", "started_at", "ended_at", "frames", "damaged", "rejected", "source")
    return _emit(rows, cols, args.json)


def _frames(args: argparse.Namespace) -> int:
    from agent.core.errors import SkysiftError

    store = _open_store(args)
    try:
        if store.flight(args.flight) is None:
            raise SkysiftError(f"no flight {args.flight!r} (see `skysift flights`)")
        rows = store.frames(args.flight, limit=args.limit)
    finally:
        store.close()
    return _emit(rows, TABLE_COLUMNS, args.json)


def _emit(rows: list[dict], cols: tuple[str, ...] | list[str], as_json: bool) -> int:
    """Every column as JSON, or the chosen columns as a table."""
    if as_json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    _table([{c: r.get(c) for c in cols} for r in rows], cols)
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
