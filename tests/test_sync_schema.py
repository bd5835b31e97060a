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

    names = [f[0] for f in FRAME_FIELDS]
    assert [n for n in names if n in FRAME_COLUMNS] == list(FRAME_COLUMNS)  # all, in order
    assert set(names) - set(FRAME_COLUMNS) == {
        "device_id", "gcs_uri", "position", "capture_date", "synced_at", *RUN_FIELDS,
    }
