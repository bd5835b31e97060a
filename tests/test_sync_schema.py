"""BigQuery row building: every local frame row becomes a row a load job accepts."""

from __future__ import annotations

import json

from sync.schema import FRAME_FIELDS, RUN_FIELDS, frame_row


def _frame(**kw):
    base = {"frame_id": "a" * 32, "flight_id": "f", "status": "classified", "label": "damaged",
            "p_damaged": 0.8, "lat": 40.0, "lon": -3.5, "tile_grid": [[0.1, 0.8]],
            "captured_at": "2026-11-20T10:00:00.000Z", "classified_at": "2026-11-21T09:00:00.000Z",
            "run_id": "r", "seq": 7}
    return {**base, **kw}


def test_row_has_every_schema_column_and_nothing_else():
    row = frame_row(_frame(), "dev", {"hostname": "h", "cores": 2}, "gs://b/x.png", "2026-11-21T09:00:01Z")
    assert set(row) == {f[0] for f in FRAME_FIELDS}  # e.g. the outbox's "seq" is not sent
    assert row["position"] == "POINT(-3.5 40.0)"
    assert row["capture_date"] == "2026-11-20" and row["hostname"] == "h"
    assert json.loads(row["tile_grid"]) == [[0.1, 0.8]]
    json.dumps(row, allow_nan=False)


def test_values_that_would_fail_a_load_job_become_null():
    row = frame_row(_frame(p_damaged=float("nan"), lat=123.0, tile_grid=[[float("inf")]], captured_at=None),
                    "dev", None, None, "2026-11-21T09:00:01Z")
    assert row["p_damaged"] is None and row["position"] is None and row["lat"] == 123.0
    assert json.loads(row["tile_grid"]) == [[None]]
    assert row["capture_date"] == "2026-11-21"  # no capture time: the classification day
    json.dumps(row, allow_nan=False)  # strict JSON: what the load job parses


def test_bigquery_frame_columns_are_the_local_columns_plus_its_own():
    from agent.store.columns import FRAME_COLUMNS
    from sync.schema import _NOT_SENT

    names = [f[0] for f in FRAME_FIELDS]
    sent = [c for c in FRAME_COLUMNS if c not in _NOT_SENT]
    assert [n for n in names if n in FRAME_COLUMNS] == sent  # all, in order
    assert {"tile_centers", "tile_corners"} == _NOT_SENT  # they travel as the damaged tiles
    assert set(names) - set(FRAME_COLUMNS) == {
        "device_id", "gcs_uri", "position", "capture_date", "synced_at", *RUN_FIELDS,
        "damaged_tile_locations",
    }


def test_footprint_goes_to_bigquery_as_a_polygon_and_a_bad_one_as_null():
    ring = [[11.0, 43.0], [11.001, 43.0], [11.001, 43.001], [11.0, 43.001], [11.0, 43.0]]
    base = {"frame_id": "f", "flight_id": "x", "status": "classified", "classified_at": "2026-01-01T00:00:00Z"}
    row = frame_row({**base, "footprint": {"type": "Polygon", "coordinates": [ring]}}, "d", None, None, "t")
    assert row["footprint"].startswith("POLYGON((11.0 43.0, 11.001 43.0")
    bad = {"type": "Polygon", "coordinates": [[[500, 43], [11, 43], [11, 44], [500, 43]]]}
    assert frame_row({**base, "footprint": bad}, "d", None, None, "t")["footprint"] is None
    assert frame_row(base, "d", None, None, "t")["footprint"] is None
