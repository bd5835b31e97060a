"""The SQLite buffer: migrations, idempotent inserts, flight counts, deliveries."""

from __future__ import annotations

import sqlite3

import pytest
import sqlite_utils

from agent.store.db import Store
from agent.store.migrations import MIGRATIONS


def _row(fid, flight="f1", status="classified", label="undamaged", **kw):
    r = {
        "frame_id": fid,
        "flight_id": flight,
        "source": f"/in/{fid}.png",
        "sha256": fid * 2,
        "status": status,
        "label": label if status == "classified" else None,
        "reason": None if status == "classified" else "corrupt",
        "p_damaged": 0.9 if label == "damaged" else 0.1,
        "tiles": 1,
        "damaged_tiles": int(label == "damaged"),
        "tile_grid": [[0.9 if label == "damaged" else 0.1]],
        "geo_source": "none",
    }
    r.update(kw)
    return r


def test_schema_created_in_wal_mode(tmp_path):
    s = Store(tmp_path / "skysift.db")
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert {"frames", "flights", "runs", "deliveries"} <= set(s.db.table_names())
    s.close()
    # reopening does not re-run migrations
    s2 = Store(tmp_path / "skysift.db")
    assert s2.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_same_frame_twice_is_one_row_and_counted_once(tmp_path):
    s = Store(tmp_path / "db.sqlite")
    assert s.add_frames([_row("a", label="damaged"), _row("b")]) == ["a", "b"]
    assert s.add_frames([_row("a", label="damaged"), _row("c", status="rejected")]) == ["c"]
    assert s.count_frames() == 3
    fl = s.flight("f1")
    assert (fl["frames"], fl["classified"], fl["damaged"], fl["rejected"]) == (3, 2, 1, 1)
    assert s.frame("a")["tile_grid"] == [[0.9]]


def test_pending_done_failed_dropped(tmp_path):
    s = Store(tmp_path / "db.sqlite")
    s.add_frames([_row(x) for x in "abcd"])
    assert [r["frame_id"] for r in s.pending("gcs")] == list("abcd")
    s.mark_failed("gcs", ["a"], "timeout")
    s.mark_delivered("gcs", ["b"])
    s.mark_dropped("gcs", ["c"], "file vanished")
    # failed stays pending (retried), done and dropped do not
    assert [r["frame_id"] for r in s.pending("gcs")] == ["a", "d"]
    assert s.count_pending("gcs") == 2
    assert s.delivery("gcs", "a")["attempts"] == 1
    s.mark_delivered("gcs", ["a"])
    d = s.delivery("gcs", "a")
    assert d["state"] == "done" and d["attempts"] == 2 and d["last_error"] is None
    # another target is independent
    assert s.count_pending("bigquery") == 4


def test_readonly_store_cannot_write(tmp_path):
    Store(tmp_path / "db.sqlite").add_frames([_row("a")])
    ro = Store(tmp_path / "db.sqlite", readonly=True)
    assert ro.count_frames() == 1
    try:
        ro.add_frames([_row("b")])
    except sqlite3.OperationalError as exc:
        assert "readonly" in str(exc)
    else:
        raise AssertionError("write to a read-only store succeeded")


def test_flight_lifecycle(tmp_path):
    s = Store(tmp_path / "db.sqlite")
    assert s.ensure_flight("cam-1", "Camera run", "rtsp://x") is True
    assert s.ensure_flight("cam-1") is False
    s.end_flight("cam-1")
    assert s.flight("cam-1")["ended_at"] is not None
    s.reopen_flight("cam-1")
    assert s.flight("cam-1")["ended_at"] is None


def _schema(path) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("start", range(len(MIGRATIONS)))
def test_upgraded_file_has_the_schema_of_a_fresh_one(tmp_path, start):
    """A device's file at any older version, once opened, matches a file created today."""
    Store(tmp_path / "fresh.db").close()
    old = sqlite_utils.Database(tmp_path / "old.db")
    for version, step in enumerate(MIGRATIONS[:start], start=1):
        step(old)
        old.execute(f"PRAGMA user_version = {version}")
    old.conn.close()
    upgraded = Store(tmp_path / "old.db")
    assert upgraded.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    upgraded.close()
    assert _schema(tmp_path / "old.db") == _schema(tmp_path / "fresh.db")


def test_ground_columns_round_trip_and_the_tiles_view_has_a_row_per_tile(tmp_path):
    store = Store(tmp_path / "s.db")
    ring = [[11.0, 43.0], [11.001, 43.0], [11.001, 43.001], [11.0, 43.001], [11.0, 43.0]]
    centers = [[[11.00025, 43.00075], None], [[11.00025, 43.00025], [11.00075, 43.00025]]]
    store.add_frames([_row(
        "a", tile_grid=[[0.9, 0.1], [0.2, 0.8]], tile_centers=centers,
        footprint={"type": "Polygon", "coordinates": [ring]}, alt_agl=50.0, pose_source="gimbal",
    )])
    got = store.frame("a")
    assert got["tile_centers"] == centers and got["footprint"]["coordinates"] == [ring]
    tiles = store.db.execute("SELECT row, col, p_damaged, lon, lat FROM tiles ORDER BY row, col").fetchall()
    assert [tuple(t) for t in tiles] == [
        (0, 0, 0.9, 11.00025, 43.00075), (0, 1, 0.1, None, None),  # a tile whose ray missed
        (1, 0, 0.2, 11.00025, 43.00025), (1, 1, 0.8, 11.00075, 43.00025),
    ]
    store.close()


def test_damaged_cells_are_the_most_probable_tiles_of_the_count():
    from agent.store.tiles import damaged_cells

    row = {"tile_grid": [[0.2, 0.9], [0.9, float("nan")]], "damaged_tiles": 2}
    assert damaged_cells(row) == [(0, 1, 0.9), (1, 0, 0.9)]
    assert damaged_cells({**row, "damaged_tiles": 1}) == [(0, 1, 0.9)]  # a tie: grid order
    assert damaged_cells({**row, "damaged_tiles": 0}) == [] == damaged_cells({"tile_grid": None})
