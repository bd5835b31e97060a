"""sync/fleet.sql, the latest state per device, run on the BigQuery emulator against rows two
devices synced through the real targets (one of them with rows still owed)."""

from __future__ import annotations

from pathlib import Path

from emulators import BQ_PROJECT, bq_client, unique
from sync_data import make_frames

from agent.core.config import parse_config
from agent.store.db import Store
from sync.bigquery import FlightRows, FrameRows, init_dataset, table_ids

SQL = (Path(__file__).resolve().parents[1] / "sync" / "fleet.sql").read_text(encoding="utf-8")


def _device(tmp_path: Path, name: str, dataset: str, endpoint: str):
    cfg = parse_config({
        "device_id": name,
        "storage": {"dir": str(tmp_path / name)},
        "sync": {"bigquery": {"project": BQ_PROJECT, "dataset": dataset, "endpoint": endpoint}},
    })
    return cfg, Store(cfg.db_path)


def test_fleet_query_gives_last_sync_backlog_and_position_per_device(
        tmp_path, aerial_tiles, bigquery_emulator):
    dataset = unique("fleet")
    ep = bigquery_emulator.endpoint
    a_cfg, a = _device(tmp_path, "drone-a", dataset, ep)
    b_cfg, b = _device(tmp_path, "drone-b", dataset, ep)
    init_dataset(a_cfg)
    # drone-a: flight-1 (6 frames) fully synced; flight-2 ended with 3 frames, only its flight row
    # reached BigQuery (the frames are still owed)
    a_rows = make_frames(a, aerial_tiles, tmp_path / "a1", 6, flight_id="flight-1")
    a.end_flight("flight-1")
    FrameRows(a_cfg).push(a, 100)
    make_frames(a, aerial_tiles, tmp_path / "a2", 3, flight_id="flight-2")
    a.end_flight("flight-2")
    FlightRows(a_cfg).push(a, 100)
    # drone-b: the same flight id, still open, its 4 frames synced
    b_rows = make_frames(b, aerial_tiles, tmp_path / "b1", 4, flight_id="flight-1")
    FrameRows(b_cfg).push(b, 100)

    ids = {k: f"`{v}`" for k, v in table_ids(a_cfg).items()}
    rows = {r["device_id"]: dict(r) for r in bq_client(ep).query(SQL.format(**ids)).result()}
    assert set(rows) == {"drone-a", "drone-b"}
    ra, rb = rows["drone-a"], rows["drone-b"]
    assert (ra["frames"], ra["flights"], ra["backlog_frames"]) == (6, 2, 3)
    assert (rb["frames"], rb["flights"], rb["backlog_frames"]) == (4, 0, 0)
    # the last position is the newest synced frame, per device, never the other drone's
    for r, last in ((ra, a_rows[-1]), (rb, b_rows[-1])):
        assert abs(r["last_lat"] - last["lat"]) < 1e-9 and abs(r["last_lon"] - last["lon"]) < 1e-9
        assert r["last_flight_id"] == "flight-1"
    synced = {d: bq_client(ep).query(
        f"SELECT MAX(synced_at) FROM (SELECT synced_at, device_id FROM {ids['frames']} UNION ALL "
        f"SELECT synced_at, device_id FROM {ids['flights']}) WHERE device_id = '{d}'").result()
        for d in rows}
    for d, res in synced.items():
        assert rows[d]["last_sync_at"] == next(iter(res))[0]
