"""Sync targets against the real emulators: schema, rows, images, the exactly-once protocol.

The contract suite (every SyncTarget: push delivers everything, a second push sends nothing,
a crash-style repeat duplicates nothing) runs over each target; then target specifics.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from emulators import (
    BQ_PROJECT,
    bq_client,
    bq_scalar,
    gcs_client,
    unique,
)
from sync_data import make_frames

from agent.core.config import parse_config
from agent.store import batches
from agent.store.db import Store
from sync.bigquery import FlightRows, FrameRows, init_dataset, table_ids
from sync.gcs import GcsImages, init_bucket
from sync.loop import Syncer, build_targets


@pytest.fixture(scope="module")
def cloud(gcs_emulator, bigquery_emulator):
    """One bucket and one dataset for this module, created by the real `init` code once;
    each test writes under its own device_id, so tests never see each other's data."""
    names = {"bucket": unique("bkt").replace("_", "-"), "dataset": unique("ds")}
    cfg = _config(names, "init", "all", gcs_emulator, bigquery_emulator)
    init_bucket(cfg)
    init_dataset(cfg)
    return names, gcs_emulator, bigquery_emulator


def _config(names, device_id, upload_images, gcs, bq, storage_dir="data", **sync):
    return parse_config(
        {
            "device_id": device_id,
            "storage": {"dir": str(storage_dir)},
            "sync": {
                "gcs": {"bucket": names["bucket"], "endpoint": gcs.endpoint},
                "bigquery": {"project": BQ_PROJECT, "dataset": names["dataset"], "endpoint": bq.endpoint},
                "upload_images": upload_images,
                **sync,
            },
        }
    )


@pytest.fixture
def env(tmp_path, cloud):
    names, gcs, bq = cloud

    def make(upload_images: str = "all", **sync):
        return _config(names, unique("drone"), upload_images, gcs, bq, tmp_path / "data", **sync)

    return make


def _count(cfg, table: str = "frames") -> tuple[int, int]:
    t = table_ids(cfg)[table]
    key = "frame_id" if table.startswith("frames") else "flight_id"
    rows = bq_client(cfg.sync.bigquery.endpoint).query(
        f"SELECT COUNT(*), COUNT(DISTINCT {key}) FROM `{t}` WHERE device_id = '{cfg.device_id}'"
    ).result()
    return tuple(next(iter(rows)).values())


def _objects(cfg) -> dict[str, object]:
    c = gcs_client(cfg.sync.gcs.endpoint)
    return {b.name: b for b in c.list_blobs(cfg.sync.gcs.bucket, prefix=f"skysift/{cfg.device_id}/")}


def _targets(cfg):
    return {getattr(t, "label", t.name): t for t in build_targets(cfg)}


# --- contract suite: every target -----------------------------------------------------------

TARGET_LABELS = ["bigquery", "bigquery_flights", "gcs (damaged images)", "gcs (rest images)"]


@pytest.mark.parametrize("label", TARGET_LABELS)
def test_contract_push_delivers_once(env, tmp_path, aerial_tiles, label):
    cfg = env("all", batch_rows=4)
    store = Store(cfg.db_path)
    make_frames(store, aerial_tiles, tmp_path / "in", 9)
    store.end_flight("flight-1")
    target = _targets(cfg)[label]
    before = target.pending(store)
    assert before > 0
    pushed = 0
    while target.pending(store):
        n = target.push(store, 4)
        assert n > 0
        pushed += n
    assert pushed == before
    assert target.push(store, 4) == 0  # nothing left: nothing sent again
    assert target.pending(store) == 0
    # A second process with a fresh outbox view (a restart) finds nothing to send either.
    again = _targets(cfg)[label]
    assert again.pending(Store(cfg.db_path)) == 0
    target.close()
    again.close()


# --- BigQuery -------------------------------------------------------------------------------

def test_init_creates_partitioned_clustered_tables_and_views(cloud, tmp_path):
    _, gcs, bq = cloud
    names = {"bucket": unique("bkt").replace("_", "-"), "dataset": unique("ds")}
    cfg = _config(names, "drone", "all", gcs, bq, tmp_path)
    assert init_bucket(cfg).endswith("created")
    assert any("partitioned by capture_date" in line for line in init_dataset(cfg))
    client = bq_client(cfg.sync.bigquery.endpoint)
    ids = table_ids(cfg)
    t = client.get_table(ids["frames"])
    assert t.time_partitioning.field == "capture_date"
    assert t.clustering_fields[0] == "flight_id"
    types = {f.name: f.field_type for f in t.schema}
    assert types["position"] == "GEOGRAPHY"
    assert types["device_id"] == "STRING" and types["tile_grid"] == "JSON"
    f = client.get_table(ids["flights"])
    assert f.time_partitioning.field == "start_date" and f.clustering_fields == ["flight_id"]
    for view in ("frames_dedup", "flights_latest"):
        assert client.get_table(ids[view]).table_type == "VIEW"
    assert init_dataset(cfg)  # idempotent: a second init succeeds and keeps the tables
    assert init_bucket(cfg).endswith("exists")


def test_rows_carry_frame_device_run_and_geography(env, tmp_path, aerial_tiles):
    cfg = env("none")
    store = Store(cfg.db_path)
    rows = make_frames(store, aerial_tiles, tmp_path / "in", 5)
    res = Syncer(cfg, store, build_targets(cfg)).cycle()
    assert res.all_done and res.pushed["bigquery"] == 5
    ep = cfg.sync.bigquery.endpoint
    got = {
        r["frame_id"]: dict(r)
        for r in bq_client(ep).query(
            f"SELECT frame_id, device_id, hostname, label, p_damaged, ST_X(position) AS x, "
            f"ST_Y(position) AS y, capture_date, gcs_uri, tile_grid FROM `{table_ids(cfg)['frames']}` "
            f"WHERE device_id = '{cfg.device_id}'"
        ).result()
    }
    assert set(got) == {r["frame_id"] for r in rows}
    r0 = rows[0]
    g = got[r0["frame_id"]]
    assert g["device_id"] == cfg.device_id and g["hostname"] == "test-host"
    assert g["label"] == r0["label"] and g["p_damaged"] == pytest.approx(r0["p_damaged"])
    assert g["x"] == pytest.approx(r0["lon"]) and g["y"] == pytest.approx(r0["lat"])
    assert str(g["capture_date"]) == r0["captured_at"][:10]
    assert g["gcs_uri"] is None  # upload_images: none
    assert g["tile_grid"] == r0["tile_grid"]


def test_batch_crash_points_never_duplicate(env, tmp_path, aerial_tiles):
    """Crash at each step of the load-job protocol, then restart: each row lands once."""
    cfg = env("none", batch_rows=3)
    store = Store(cfg.db_path)
    make_frames(store, aerial_tiles, tmp_path / "in", 9)
    target = FrameRows(cfg)
    client = bq_client(cfg.sync.bigquery.endpoint)

    # 1. crash after the batch was recorded, before anything was sent
    keys, rows = target._next(store, 3)
    b1 = batches.create(store, "bigquery", keys, rows)
    # 2. crash after BigQuery ran the job, before SQLite recorded it (the dangerous one)
    keys, rows = target._next(store, 3)
    b2 = batches.create(store, "bigquery", keys, rows)
    assert not set(b1.keys) & set(b2.keys)
    client.load_table_from_json(b2.rows, target.table_id, job_id=b2.job_id(cfg.device_id),
                                job_config=target._job_config()).result()
    assert _count(cfg) == (3, 3)

    # restart: open batches go first, with their recorded job ids
    restarted = FrameRows(cfg)
    assert restarted.push(Store(cfg.db_path), 100) == 9
    assert _count(cfg) == (9, 9)
    detail = {r["batch_id"]: json.loads(r["detail"]) for r in store.db.execute("SELECT * FROM sync_batches")}
    assert detail[b1.batch_id]["how"] == "loaded"
    assert detail[b2.batch_id]["how"] == "found existing job"
    assert store.count_pending("bigquery") == 0
    # 3. crash after SQLite recorded it: nothing is pending, nothing is sent
    assert FrameRows(cfg).push(Store(cfg.db_path), 100) == 0
    assert _count(cfg) == (9, 9)


def test_flights_rows_and_latest_view(env, tmp_path, aerial_tiles):
    cfg = env("none")
    store = Store(cfg.db_path)
    make_frames(store, aerial_tiles, tmp_path / "a", 4, flight_id="fa")
    make_frames(store, aerial_tiles, tmp_path / "b", 2, flight_id="fb")
    store.end_flight("fa")
    flights = FlightRows(cfg)
    assert flights.pending(store) == 1  # fb has not ended
    assert flights.push(store, 10) == 1
    # fa gets late frames after it was synced: a new version is synced, the view keeps the last
    store.reopen_flight("fa")
    make_frames(store, aerial_tiles, tmp_path / "a2", 3, flight_id="fa")
    store.end_flight("fa")
    store.end_flight("fb")
    assert flights.pending(store) == 2
    assert flights.push(store, 10) == 2
    ids = table_ids(cfg)
    ep = cfg.sync.bigquery.endpoint
    mine = f"WHERE device_id = '{cfg.device_id}'"
    assert bq_scalar(ep, f"SELECT COUNT(*) FROM `{ids['flights']}` {mine}") == 3
    assert bq_scalar(ep, f"SELECT COUNT(*) FROM `{ids['flights_latest']}` {mine}") == 2
    assert bq_scalar(ep, f"SELECT frames FROM `{ids['flights_latest']}` {mine} AND flight_id = 'fa'") == 7


def test_dedup_view_hides_rows_written_twice_by_other_means(env, tmp_path, aerial_tiles):
    cfg = env("none")
    store = Store(cfg.db_path)
    make_frames(store, aerial_tiles, tmp_path / "in", 4)
    Syncer(cfg, store, build_targets(cfg)).cycle()
    ids = table_ids(cfg)
    client = bq_client(cfg.sync.bigquery.endpoint)
    # e.g. a user re-loading an export by hand
    dup = [dict(r) for r in client.query(f"SELECT frame_id, flight_id, device_id, status, "
                                         f"classified_at, synced_at FROM `{ids['frames']}` "
                                         f"WHERE device_id = '{cfg.device_id}'").result()]
    for r in dup:
        r["classified_at"] = r["classified_at"].isoformat()
        r["synced_at"] = r["synced_at"].isoformat()
    client.load_table_from_json(dup, ids["frames"]).result()
    assert _count(cfg) == (8, 4)
    assert bq_scalar(cfg.sync.bigquery.endpoint, f"SELECT COUNT(*) FROM `{ids['frames_dedup']}` "
                     f"WHERE device_id = '{cfg.device_id}'") == 4


# --- GCS --------------------------------------------------------------------------------------

def test_images_named_typed_with_metadata_and_checksums(env, tmp_path, aerial_tiles):
    cfg = env("damaged")
    store = Store(cfg.db_path)
    rows = make_frames(store, aerial_tiles, tmp_path / "in", 6)
    res = Syncer(cfg, store, build_targets(cfg)).cycle()
    assert res.all_done
    objs = _objects(cfg)
    damaged = [r for r in rows if r["label"] == "damaged"]
    assert len(objs) == len(damaged) == 2
    for r in damaged:
        name = f"skysift/{cfg.device_id}/flight-1/{r['frame_id']}.png"
        b = objs[name]
        data = Path(r["image_path"]).read_bytes()
        assert b.content_type == "image/png"
        assert b.md5_hash == base64.b64encode(hashlib.md5(data).digest()).decode()
        assert b.metadata["label"] == "damaged" and b.metadata["sha256"] == r["sha256"]
        assert float(b.metadata["lat"]) == pytest.approx(r["lat"])
        assert b.metadata["captured_at"] == r["captured_at"]
    # the rows point at the objects
    ep = cfg.sync.bigquery.endpoint
    uris = bq_scalar(ep, f"SELECT COUNT(gcs_uri) FROM `{table_ids(cfg)['frames']}` "
                         f"WHERE device_id = '{cfg.device_id}'")
    assert uris == 2


def test_412_after_crash_verifies_checksum_then_marks_done(env, tmp_path, aerial_tiles):
    cfg = env("all")
    store = Store(cfg.db_path)
    rows = make_frames(store, aerial_tiles, tmp_path / "in", 3, damaged_every=1)
    bucket = gcs_client(cfg.sync.gcs.endpoint).bucket(cfg.sync.gcs.bucket)
    same, other = rows[0], rows[1]
    # an earlier (crashed) attempt uploaded frame 0 completely...
    bucket.blob(f"skysift/{cfg.device_id}/flight-1/{same['frame_id']}.png").upload_from_filename(same["image_path"])
    # ...and something else sits under frame 1's name (corrupt/foreign object)
    bucket.blob(f"skysift/{cfg.device_id}/flight-1/{other['frame_id']}.png").upload_from_string(b"not the image")
    target = GcsImages(cfg, "damaged")
    assert target.push(store, 10) == 3
    assert json.loads(store.delivery("gcs", same["frame_id"])["detail"])["how"].startswith("already there")
    assert json.loads(store.delivery("gcs", other["frame_id"])["detail"])["how"] == "replaced"
    replaced = bucket.get_blob(f"skysift/{cfg.device_id}/flight-1/{other['frame_id']}.png")
    assert replaced.download_as_bytes() == Path(other["image_path"]).read_bytes()
    assert len(_objects(cfg)) == 3


def test_vanished_or_changed_image_is_dropped_with_reason(env, tmp_path, aerial_tiles):
    cfg = env("all")
    store = Store(cfg.db_path)
    rows = make_frames(store, aerial_tiles, tmp_path / "in", 3)
    import os

    os.unlink(rows[0]["image_path"])
    with open(rows[1]["image_path"], "ab") as f:
        f.write(b"edited")
    res = Syncer(cfg, store, build_targets(cfg)).cycle()
    assert res.all_done
    d0, d1, d2 = (store.delivery("gcs", r["frame_id"]) for r in rows)
    assert d0["state"] == "dropped" and "vanished" in d0["last_error"]
    assert d1["state"] == "dropped" and "changed" in d1["last_error"]
    assert d2["state"] == "done"
    assert len(_objects(cfg)) == 1
    assert store.delivery("bigquery", rows[0]["frame_id"])["state"] == "done"  # rows still go


def test_order_rows_then_damaged_then_rest(env, tmp_path, aerial_tiles):
    cfg = env("all")
    store = Store(cfg.db_path)
    make_frames(store, aerial_tiles, tmp_path / "in", 40)
    Syncer(cfg, store, build_targets(cfg)).cycle()
    order = [
        (r["target"], r["label"])
        for r in store.db.execute(
            "SELECT d.target, f.label FROM deliveries d JOIN frames f USING (frame_id) "
            "WHERE d.target IN ('bigquery', 'gcs') ORDER BY d.updated_at, d.rowid"
        )
    ]
    rank = [0 if t == "bigquery" else 1 if lab == "damaged" else 2 for t, lab in order]
    assert rank == sorted(rank)
    assert len(rank) == 80


def test_init_adds_the_damaged_tiles_record_to_an_old_frames_table_once(cloud, tmp_path):
    from google.cloud import bigquery

    from sync.schema import FRAME_FIELDS, bq_schema

    _, gcs, bq = cloud
    cfg = _config({"bucket": "unused", "dataset": unique("ds")}, "drone", "none", gcs, bq, tmp_path)
    client = bq_client(cfg.sync.bigquery.endpoint)
    client.create_dataset(f"{cfg.sync.bigquery.project}.{cfg.sync.bigquery.dataset}")
    old = [f for f in FRAME_FIELDS if f[0] not in ("damaged_tile_locations", "footprint")]
    frames_id = table_ids(cfg)["frames"]
    client.create_table(bigquery.Table(frames_id, schema=bq_schema(old)))
    first = init_dataset(cfg)
    assert f"table {frames_id}: added footprint, damaged_tile_locations" in first
    schema = {f.name: f for f in client.get_table(frames_id).schema}
    rec = schema["damaged_tile_locations"]
    assert (rec.field_type, rec.mode) == ("RECORD", "REPEATED")
    assert {f.name: f.field_type for f in rec.fields}["polygon"] == "GEOGRAPHY"
    second = init_dataset(cfg)  # run twice = no change
    assert not [line for line in second if "added" in line]
    assert [f.name for f in client.get_table(frames_id).schema] == list(schema)


def test_damaged_tiles_land_inside_the_frame_row(env, tmp_path, aerial_tiles):
    cfg = env("none")
    store = Store(cfg.db_path)
    row = make_frames(store, aerial_tiles, tmp_path / "in", 1)[0]
    centres = [[[8.0, 47.0], [8.001, 47.0]]]
    corners = [[[7.9995, 47.0005], [8.0005, 47.0005], [8.0015, 47.0005]],
               [[7.9995, 46.9995], [8.0005, 46.9995], [8.0015, 46.9995]]]
    store.db["frames"].update(row["frame_id"], {
        "tile_grid": json.dumps([[0.9, 0.2]]), "damaged_tiles": 1, "tile_centers": json.dumps(centres),
        "tile_corners": json.dumps(corners),
    })
    res = Syncer(cfg, store, build_targets(cfg)).cycle()
    assert res.all_done
    got = [dict(r) for r in bq_client(cfg.sync.bigquery.endpoint).query(
        f"SELECT d.row, d.col, d.p_damaged, ST_X(d.center) AS x, ST_Y(d.center) AS y, "
        f"ST_AREA(d.polygon) AS area FROM `{table_ids(cfg)['frames']}` f, "
        f"UNNEST(f.damaged_tile_locations) d WHERE f.frame_id = '{row['frame_id']}'").result()]
    # one tile damaged at the card's threshold: the 0.9 one
    assert len(got) == 1 and (got[0]["row"], got[0]["col"]) == (0, 0)
    assert (got[0]["x"], got[0]["y"]) == (pytest.approx(8.0), pytest.approx(47.0))
    assert got[0]["area"] == pytest.approx(76 * 111, rel=0.05)  # ~0.001 deg lon x 0.001 deg lat
