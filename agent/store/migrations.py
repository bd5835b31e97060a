"""The database schema, as numbered migrations, and the one transaction helper they share.

``PRAGMA user_version`` records how far a file has come; :func:`migrate` runs the steps after
it, in order, one transaction each. Append only. Never edit a migration that has shipped: a
device in the field may hold a file at any version, and upgrades run in order from there.

:func:`atomic` lives here rather than in :mod:`agent.store.db` because ``migrate`` needs it
and ``db`` imports this module (the store re-uses it for every write).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlite_utils


def _m1_initial(db: sqlite_utils.Database) -> None:
    """The first schema: flights, the runs that classified them, their frames, and deliveries."""
    _create_flights(db)
    _create_runs(db)
    _create_frames(db)
    _create_deliveries(db)


def _create_flights(db: sqlite_utils.Database) -> None:
    db["flights"].create(
        {
            "flight_id": str,
            "name": str,
            "source": str,
            "started_at": str,
            "ended_at": str,
            "frames": int,
            "classified": int,
            "damaged": int,
            "rejected": int,
        },
        pk="flight_id",
        not_null={"name", "started_at"},
        defaults={"frames": 0, "classified": 0, "damaged": 0, "rejected": 0},
    )


def _create_runs(db: sqlite_utils.Database) -> None:
    db["runs"].create(
        {
            "run_id": str,
            "started_at": str,
            "ended_at": str,
            "device_id": str,
            "hostname": str,
            "os": str,
            "cpu_model": str,
            "cores": int,
            "memory_mb": int,
            "python": str,
            "engine": str,
            "device": str,
            "precision": str,
            "model_sha256": str,
            "versions": str,  # JSON: skysift, openvino, tensorflow, opencv, numpy
        },
        pk="run_id",
    )


def _create_frames(db: sqlite_utils.Database) -> None:
    db["frames"].create(
        {
            "frame_id": str,
            "flight_id": str,
            "source": str,
            "image_path": str,
            "sha256": str,
            "bytes": int,
            "status": str,
            "reason": str,
            "label": str,
            "p_damaged": float,
            "tiles": int,
            "damaged_tiles": int,
            "tile_px": int,
            "tile_grid": str,  # JSON list of rows of p_damaged
            "width": int,
            "height": int,
            "lat": float,
            "lon": float,
            "alt": float,
            "geo_source": str,
            "captured_at": str,
            "classified_at": str,
            "engine": str,
            "device": str,
            "precision": str,
            "inference_ms": float,
            "total_ms": float,
            "run_id": str,
        },
        pk="frame_id",
        not_null={"flight_id", "source", "status", "classified_at"},
        foreign_keys=[("flight_id", "flights", "flight_id"), ("run_id", "runs", "run_id")],
    )
    db["frames"].create_index(["flight_id", "classified_at"])
    db["frames"].create_index(["status"])


def _create_deliveries(db: sqlite_utils.Database) -> None:
    db["deliveries"].create(
        {
            "target": str,
            "frame_id": str,
            "state": str,  # done | failed | dropped
            "attempts": int,
            "last_error": str,
            "updated_at": str,
            "detail": str,  # target-specific JSON, e.g. the GCS generation or the load job id
        },
        pk=("target", "frame_id"),
        defaults={"attempts": 0},
    )
    db["deliveries"].create_index(["target", "state"])


def _m2_sync_batches(db: sqlite_utils.Database) -> None:
    # The sync outbox's batches (sync/batches.py): the set of keys and the exact payload of one
    # remote write, fixed and committed here BEFORE the first attempt, so that a retry after a
    # crash repeats the very same write (same BigQuery job id, same rows) and cannot duplicate.
    db["sync_batches"].create(
        {
            "batch_id": str,  # random uuid, part of the remote job id
            "target": str,  # bigquery, bigquery_flights
            "keys": str,  # JSON list of frame_ids (or flight_ids), in order
            "payload": str,  # JSON rows as sent; cleared once done
            "attempt": int,  # bumped only when the remote reported the write failed
            "state": str,  # open | done
            "created_at": str,
            "updated_at": str,
            "detail": str,  # JSON: job id, output rows, last error
        },
        pk="batch_id",
        not_null={"target", "keys", "state", "created_at"},
        defaults={"attempt": 0},
    )
    db["sync_batches"].create_index(["target", "state"])


def _m3_files(db: sqlite_utils.Database) -> None:
    # The watched folder's files already recorded, by path and version (size, mtime_ns): a
    # restart then skips them without reading and hashing every file again (gigabytes on an SD
    # card). Only a cache: a row is written AFTER its frame is committed, so a crash between the
    # two costs one extra read of that file, never a lost frame; the frames table stays the truth.
    db["files"].create(
        {"path": str, "size": int, "mtime_ns": int, "frame_id": str, "seen_at": str},
        pk="path",
    )


#: The columns that place a frame on the ground (issue 12), added by :func:`_m4_ground`.
GROUND_COLUMNS: dict[str, type] = {
    "alt_agl": float,  # height above ground, metres
    "alt_msl": float,  # altitude above sea level (orthometric, the DEM's datum), metres
    "agl_source": str,  # which rule gave alt_agl (agent.imaging.pose)
    "yaw": float,  # degrees clockwise from true north (DJI's convention, README "Where on the ground")
    "pitch": float,  # -90 straight down, 0 the horizon
    "roll": float,
    "pose_source": str,  # gimbal | telemetry | nadir_heading_unknown
    "footprint": str,  # JSON GeoJSON Polygon of the frame's corners, [lon, lat]; NULL if unplaced
    "tile_centers": str,  # JSON rows x cols of [lon, lat] or null, the shape of tile_grid
    "tile_corners": str,  # JSON (rows+1) x (cols+1) of [lon, lat] or null: tile i,j spans [i..i+1][j..j+1]
}


def _m4_ground(db: sqlite_utils.Database) -> None:
    # Where each frame and each tile lies on the ground. Columns on frames (one JSON grid per
    # frame, as tile_grid) rather than a row per tile: a 128-px tile stream commits thousands of
    # frames a second, and a second insert per tile would halve that. The ``tiles`` view gives
    # one row per tile for queries (sqlite-utils query ... "select * from tiles").
    for name, kind in GROUND_COLUMNS.items():
        db["frames"].add_column(name, kind)
    db.execute(
        """
        CREATE VIEW IF NOT EXISTS tiles AS
        SELECT f.frame_id, f.flight_id, CAST(r.key AS INTEGER) AS row, CAST(c.key AS INTEGER) AS col,
               c.value AS p_damaged,
               json_extract(f.tile_centers, '$[' || r.key || '][' || c.key || '][0]') AS lon,
               json_extract(f.tile_centers, '$[' || r.key || '][' || c.key || '][1]') AS lat
        FROM frames f, json_each(f.tile_grid) r, json_each(r.value) c
        WHERE f.tile_grid IS NOT NULL
        """
    )


def _m5_frame_warnings(db: sqlite_utils.Database) -> None:
    # What was odd about a frame that still decoded in full (a JSON list of {reason, message},
    # NULL when none): cameras write quirky files, and a frame classified in spite of a quirk
    # should say so. Checked first so that a file someone patched by hand still upgrades.
    if "warnings" not in db["frames"].columns_dict:
        db["frames"].add_column("warnings", str)


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m1_initial,
    _m2_sync_batches,
    _m3_files,
    _m4_ground,
    _m5_frame_warnings,
]


@contextmanager
def atomic(conn: sqlite3.Connection) -> Iterator[None]:
    """One real transaction on ``conn``; nested uses join the outer one.

    Opened explicitly (``BEGIN IMMEDIATE``): Python's sqlite3 opens transactions lazily, and
    sqlite-utils 4 commits each write of ``Database.execute`` when no transaction is open yet,
    so ``with conn:`` alone would commit statement by statement (a kill -9 in between would
    leave a frame row without its flight count). IMMEDIATE takes the write lock up front, so
    two writers wait for each other (busy timeout) instead of failing halfway.
    """
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    else:
        conn.commit()


def migrate(db: sqlite_utils.Database) -> int:
    """Bring the schema to the latest version; return the version reached."""
    current = db.execute("PRAGMA user_version").fetchone()[0]
    for version, step in enumerate(MIGRATIONS, start=1):
        if version <= current:
            continue
        with atomic(db.conn):  # one transaction per migration: a crash leaves the old version intact
            step(db)
            db.execute(f"PRAGMA user_version = {version}")
    return len(MIGRATIONS)
