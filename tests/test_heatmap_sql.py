"""sync/heatmap.sql, the cloud-side damage heat map, run on the BigQuery emulator.

The table and its de-duplicated view are made by `skysift sync init` (``init_dataset``); rows
are the sync's own BigQuery rows (``sync.schema.frame_row``) of a real SQLite file holding the
geotagged photos and a lawn-mower survey, loaded with the official client, some of them twice.
Every cell is checked against the same grid computed here in Python.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from emulators import BQ_PROJECT, bigquery_emulator, bq_client, unique  # noqa: F401
from report_data import (
    GPS_FLIGHT,
    MOWER_FLIGHT,
    ZONES,
    gps_photo_rows,
    lawnmower_rows,
    survey_latlon,
)

from agent.cli.report import heatmap_sql
from agent.core.config import parse_config
from agent.report.build import ReportError
from agent.store.db import Store

ROOT = Path(__file__).resolve().parents[1]
SQL = (ROOT / "sync" / "heatmap.sql").read_text(encoding="utf-8")
M_PER_DEG = 111195.08
DEVICE = "drone-heatmap"


def _cell(lat: float, lon: float, cell_m: float) -> tuple[int, int]:
    """The grid of heatmap.sql, written again independently."""
    dlat = cell_m / M_PER_DEG
    r = math.floor(lat / dlat)
    dlon = cell_m / (M_PER_DEG * math.cos(math.radians((r + 0.5) * dlat)))
    return r, math.floor(lon / dlon)


@pytest.fixture(scope="module")
def bq(bigquery_emulator, tmp_path_factory, exif_samples):  # noqa: F811
    from sync.bigquery import init_dataset, table_ids
    from sync.schema import frame_row

    cfg = parse_config(
        {
            "device_id": DEVICE,
            "sync": {"bigquery": {"project": BQ_PROJECT, "dataset": unique("heat"), "endpoint": bigquery_emulator.endpoint}},
        }
    )
    init_dataset(cfg)
    store = Store(tmp_path_factory.mktemp("heat") / "skysift.db")
    store.add_frames(gps_photo_rows(exif_samples))
    store.add_frames(lawnmower_rows(1500))
    frames = store.frames()
    store.close()
    synced = datetime(2026, 2, 6, 12, 0, tzinfo=timezone.utc)
    rows = [frame_row(f, DEVICE, None, None, synced.isoformat()) for f in frames]
    client = bq_client(bigquery_emulator.endpoint)
    ids = table_ids(cfg)
    client.load_table_from_json(rows, ids["frames"]).result()
    # The same 300 frames again, later: a re-load by hand. The heat map must count them once.
    again = [{**r, "synced_at": (synced + timedelta(hours=1)).isoformat()} for r in rows[:300]]
    client.load_table_from_json(again, ids["frames"]).result()
    return client, ids, frames


def _heatmap(bq, cell_m=100.0, flight_id=None, since=None, min_frames=1) -> list[dict]:
    from google.cloud import bigquery

    client, ids, _ = bq
    params = [
        bigquery.ScalarQueryParameter("cell_m", "FLOAT64", cell_m),
        bigquery.ScalarQueryParameter("flight_id", "STRING", flight_id),
        bigquery.ScalarQueryParameter("since", "TIMESTAMP", since),
        bigquery.ScalarQueryParameter("min_frames", "INT64", min_frames),
    ]
    sql = SQL.replace("{frames_dedup}", f"`{ids['frames_dedup']}`")
    job = client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params))
    return [dict(r.items()) for r in job.result()]


def _reference(frames, cell_m=100.0, flight_id=None, since=None) -> dict[tuple[int, int], tuple[int, int]]:
    cells: dict[tuple[int, int], Counter] = {}
    for f in frames:
        if f["status"] != "classified" or f["lat"] is None or (flight_id and f["flight_id"] != flight_id):
            continue
        if since and f["captured_at"] < since.isoformat().replace("+00:00", "Z"):
            continue
        c = cells.setdefault(_cell(f["lat"], f["lon"], cell_m), Counter())
        c["frames"] += 1
        c["damaged"] += f["label"] == "damaged"
    return {k: (v["frames"], v["damaged"]) for k, v in cells.items()}


@pytest.fixture(scope="module")
def full(bq) -> list[dict]:
    """The default heat map (100 m cells, all flights), computed once: emulator queries are slow."""
    return _heatmap(bq)


def test_every_cell_matches_the_grid_computed_in_python(bq, full):
    _, ids, frames = bq
    got = full
    expected = _reference(frames)
    assert {(r["row_ix"], r["col_ix"]): (r["frames"], r["damaged_frames"]) for r in got} == expected
    # each located, classified frame once: not the rejected one, not the unlocated ones, not the re-loaded copies
    assert sum(r["frames"] for r in got) == 9 + 1500 - 6
    for r in got:
        assert r["damaged_share"] == pytest.approx(r["damaged_frames"] / r["frames"])
    shares = [r["damaged_share"] for r in got]
    assert shares == sorted(shares, reverse=True)  # hottest first


def test_hot_cells_are_over_the_damaged_zones(bq):
    got = _heatmap(bq, cell_m=100.0, flight_id=MOWER_FLIGHT)
    hot = [r for r in got if r["damaged_share"] == 1 and r["frames"] >= 3]
    assert len(hot) >= 5
    centres = [survey_latlon(zx, zy) + (zr,) for zx, zy, zr in ZONES]
    for r in hot:
        # distance to the nearest zone centre, less its radius plus half a footprint (56 m) and a cell diagonal
        d = min(
            math.hypot((r["center_lat"] - la) * M_PER_DEG, (r["center_lon"] - lo) * M_PER_DEG * math.cos(math.radians(la))) - zr
            for la, lo, zr in centres
        )
        assert d < 56 + 142, r
    cold = [r for r in got if r["damaged_share"] == 0]
    assert len(cold) > len(hot)


def test_cells_are_square_polygons_of_the_requested_size(bq):
    got = _heatmap(bq, cell_m=250.0)
    assert got
    for r in got:
        assert r["cell_area_m2"] == pytest.approx(250.0 * 250.0, rel=0.01)
        assert r["damaged_per_km2"] == pytest.approx(r["damaged_frames"] / (r["cell_area_m2"] / 1e6))
        ring = json.loads(r["cell_geojson"])["coordinates"][0]
        assert json.loads(r["cell_geojson"])["type"] == "Polygon" and len(ring) == 5 and ring[0] == ring[-1]
        lons, lats = [p[0] for p in ring], [p[1] for p in ring]
        assert min(lats) < r["center_lat"] < max(lats) and min(lons) < r["center_lon"] < max(lons)
        assert (max(lats) - min(lats)) * M_PER_DEG == pytest.approx(250.0, rel=1e-6)
        assert r["center"] is not None and r["cell"] is not None


def test_parameters_choose_flight_time_and_minimum(bq, full):
    _, _, frames = bq
    photos = _heatmap(bq, flight_id=GPS_FLIGHT)
    assert sum(r["frames"] for r in photos) == 9
    assert all(43.4 < r["center_lat"] < 43.5 and 11.8 < r["center_lon"] < 11.9 for r in photos)
    since = datetime(2026, 2, 6, 10, 15, tzinfo=timezone.utc)  # the survey's last 600 frames
    later = _heatmap(bq, since=since)
    assert {(r["row_ix"], r["col_ix"]): (r["frames"], r["damaged_frames"]) for r in later} == _reference(frames, since=since)
    assert sum(r["frames"] for r in later) == 600 - 3  # frames 999, 1249 and 1499 lost their GPS
    busy = _heatmap(bq, min_frames=3)
    assert busy and all(r["frames"] >= 3 for r in busy)
    assert len(busy) < len(full)


def test_cli_prints_the_sql_for_the_configured_view(tmp_path):
    cfg = tmp_path / "skysift.yaml"
    cfg.write_text(yaml.safe_dump({"sync": {"bigquery": {"project": "relief-eu", "dataset": "quake", "table": "frames"}}}))
    out = subprocess.run(
        [sys.executable, "-m", "agent", "-c", str(cfg), "report", "--bigquery-sql"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "FROM `relief-eu.quake.frames_dedup`" in out.stdout and "{frames_dedup}" not in out.stdout
    assert out.stdout.count("@cell_m") >= 3
    with pytest.raises(ReportError, match="sync.bigquery.project"):
        heatmap_sql(parse_config({}))


def test_damage_is_counted_where_the_damaged_tiles_lie(bigquery_emulator):  # noqa: F811
    """An oblique frame over (43.0, 11.0) whose damaged tiles lie ~1 km north: the heat is there."""
    from sync.bigquery import init_dataset, table_ids
    from sync.schema import frame_row

    cfg = parse_config({"device_id": DEVICE, "sync": {"bigquery": {
        "project": BQ_PROJECT, "dataset": unique("heattiles"), "endpoint": bigquery_emulator.endpoint}}})
    init_dataset(cfg)
    far = [[11.0, 43.009], [11.0003, 43.009], [11.0006, 43.009]]  # one 100 m cell, ~1 km north
    frame = {
        "frame_id": "f" * 32, "flight_id": "oblique", "status": "classified", "label": "damaged",
        "p_damaged": 0.9, "tiles": 3, "damaged_tiles": 2, "tile_grid": [[0.9, 0.1, 0.8]],
        "lat": 43.0, "lon": 11.0, "captured_at": "2026-02-06T10:00:00Z",
        "classified_at": "2026-02-06T10:00:01Z", "tile_centers": [far],
    }
    row = frame_row(frame, DEVICE, None, None, "2026-02-06T12:00:00Z")
    assert len(row["damaged_tile_locations"]) == 2  # the two most probable: 0.9 and 0.8
    client = bq_client(bigquery_emulator.endpoint)
    ids = table_ids(cfg)
    client.load_table_from_json([row], ids["frames"]).result()
    got = _heatmap((client, ids, [frame]))
    tile_cell, frame_cell = _cell(43.009, 11.0003, 100.0), _cell(43.0, 11.0, 100.0)
    cells = {(r["row_ix"], r["col_ix"]): r for r in got}
    assert set(cells) == {tile_cell, frame_cell}
    assert (cells[tile_cell]["located_damaged_tiles"], cells[tile_cell]["frames"]) == (2, 0)
    assert (cells[frame_cell]["located_damaged_tiles"], cells[frame_cell]["frames"]) == (0, 1)
    assert (got[0]["row_ix"], got[0]["col_ix"]) == tile_cell  # hottest first: by tile position


def test_two_devices_are_two_rows_and_two_flights_of_the_same_name(bigquery_emulator):  # noqa: F811
    """A fleet: the same file (one frame_id) and the same flight name on two drones. The dedup
    view keeps one row per (device_id, frame_id), and the heat map counts two flights."""
    from sync.bigquery import init_dataset, table_ids
    from sync.schema import frame_row

    cfg = parse_config({"device_id": DEVICE, "sync": {"bigquery": {
        "project": BQ_PROJECT, "dataset": unique("fleetheat"), "endpoint": bigquery_emulator.endpoint}}})
    init_dataset(cfg)
    frame = {
        "frame_id": "e" * 32, "flight_id": "flight-1", "status": "classified", "label": "damaged",
        "p_damaged": 0.9, "tiles": 1, "damaged_tiles": 1, "lat": 43.0, "lon": 11.0,
        "captured_at": "2026-02-06T10:00:00Z", "classified_at": "2026-02-06T10:00:01Z",
    }
    rows = [frame_row(frame, dev, None, None, "2026-02-06T12:00:00Z") for dev in ("drone-a", "drone-b")]
    client = bq_client(bigquery_emulator.endpoint)
    ids = table_ids(cfg)
    client.load_table_from_json(rows, ids["frames"]).result()
    kept = list(client.query(f"SELECT device_id FROM `{ids['frames_dedup']}` ORDER BY device_id").result())
    assert [r["device_id"] for r in kept] == ["drone-a", "drone-b"]
    (cell,) = _heatmap((client, ids, [frame]))
    assert (cell["frames"], cell["flights"]) == (2, 2)
