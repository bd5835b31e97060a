"""The Storage Write API targets (sync/write_api.py) against the emulator's gRPC port.

Rows land exactly once; a crash between the append and SQLite's "done" is answered
ALREADY_EXISTS at the batch's offset; an offset past the stream's end and a stream lost by an
emulator restart are recovered without a duplicate; and the table holds the same rows as the
load-job target writes for the same outbox.
"""

from __future__ import annotations

import json
import shutil

import pytest
from emulators import BQ_PROJECT, bq_client, unique
from sync_data import make_frames

from agent.core.config import parse_config
from agent.store import batches
from agent.store.db import Store
from sync.bigquery import FlightRows, FrameRows, init_dataset, table_ids
from sync.loop import Syncer, build_targets
from sync.schema import FLIGHT_FIELDS, FRAME_FIELDS

pytest.importorskip("google.cloud.bigquery_storage_v1")

from sync import proto, write_api  # noqa: E402  (needs the [cloud] extra)


def _config(bq, dataset: str, storage_dir, method: str = "write_api", **sync):
    return parse_config({
        "device_id": unique("drone"),
        "storage": {"dir": str(storage_dir)},
        "sync": {
            "bigquery": {"project": BQ_PROJECT, "dataset": dataset, "endpoint": bq.endpoint,
                         "method": method},
            "upload_images": "none",
            **sync,
        },
    })


def _write(bq):
    return write_api.write_client(parse_config({}), f"127.0.0.1:{bq.grpc_port}")


@pytest.fixture(scope="module")
def dataset(bigquery_emulator, tmp_path_factory):
    name = unique("wa")
    init_dataset(_config(bigquery_emulator, name, tmp_path_factory.mktemp("init")))
    return name


@pytest.fixture
def env(bigquery_emulator, dataset, tmp_path):
    def make(method: str = "write_api", **sync):
        return _config(bigquery_emulator, dataset, tmp_path / "data", method, **sync)

    return make


def _count(cfg, table: str = "frames") -> tuple[int, int]:
    key = "frame_id" if table == "frames" else "flight_id"
    rows = bq_client(cfg.sync.bigquery.endpoint).query(
        f"SELECT COUNT(*), COUNT(DISTINCT {key}) FROM `{table_ids(cfg)[table]}` "
        f"WHERE device_id = '{cfg.device_id}'"
    ).result()
    return tuple(next(iter(rows)).values())


def _details(store: Store, target: str = "bigquery") -> list[dict]:
    q = "SELECT detail FROM sync_batches WHERE target = ? ORDER BY created_at, rowid"
    return [json.loads(r[0]) for r in store.db.execute(q, [target])]


# --- protobuf rows (no emulator) ----------------------------------------------------------------

def test_descriptor_follows_the_schema_with_the_tiles_as_a_repeated_nested_message():
    d = proto.descriptor("FrameRow", FRAME_FIELDS)
    assert [f.name for f in d.field] == [f[0] for f in FRAME_FIELDS]
    by_name = {f.name: f for f in d.field}
    tiles = by_name["damaged_tile_locations"]
    assert tiles.label == tiles.LABEL_REPEATED and tiles.type == tiles.TYPE_MESSAGE
    assert [n.name for n in d.nested_type] == [tiles.type_name]
    assert by_name["frame_id"].label == tiles.LABEL_REQUIRED
    assert by_name["classified_at"].type == tiles.TYPE_INT64  # TIMESTAMP: micros
    assert by_name["capture_date"].type == tiles.TYPE_INT32  # DATE: days
    assert by_name["position"].type == by_name["tile_grid"].type == tiles.TYPE_STRING


def test_row_encoding_timestamps_dates_nulls_and_tiles():
    cls = proto.message_class("FrameRow", FRAME_FIELDS)
    row = {"frame_id": "f", "flight_id": "fl", "device_id": "d", "status": "classified",
           "classified_at": "1970-01-02T00:00:00.250Z", "synced_at": "1970-01-01T00:00:01Z",
           "capture_date": "1970-01-11", "p_damaged": 1, "label": None,
           "damaged_tile_locations": [{"row": 1, "col": 2, "p_damaged": 0.9, "center": None}]}
    msg = cls.FromString(proto.serialise(cls, [row], FRAME_FIELDS)[0])
    assert msg.classified_at == 86_400_250_000 and msg.synced_at == 1_000_000
    assert msg.capture_date == 10
    assert msg.p_damaged == 1.0
    assert not msg.HasField("label")  # NULL stays unset, not ""
    (tile,) = msg.damaged_tile_locations
    assert (tile.row, tile.col, tile.p_damaged, tile.HasField("center")) == (1, 2, 0.9, False)


# --- against the emulator -----------------------------------------------------------------------

def test_build_targets_chooses_by_method(env, bigquery_emulator):
    write = _write(bigquery_emulator)
    targets = build_targets(env(), write_client=write)
    assert [type(t) for t in targets] == [write_api.FrameAppends, write_api.FlightAppends]
    assert [t.name for t in targets] == ["bigquery", "bigquery_flights"]
    assert [type(t) for t in build_targets(env("load_jobs"))] == [FrameRows, FlightRows]
    with pytest.raises(write_api.SyncSetupError, match="gRPC address"):
        build_targets(env())  # an emulator endpoint but no gRPC address to reach it


def test_rows_land_once_at_consecutive_offsets_of_one_stream(env, tmp_path, aerial_tiles, bigquery_emulator):
    cfg = env(batch_rows=4)
    store = Store(cfg.db_path)
    make_frames(store, aerial_tiles, tmp_path / "in", 10)
    store.end_flight("flight-1")
    syncer = Syncer(cfg, store, build_targets(cfg, write_client=_write(bigquery_emulator)))
    res = syncer.cycle()
    assert res.all_done and res.pushed == {"bigquery": 10, "bigquery_flights": 1}
    assert _count(cfg) == (10, 10) and _count(cfg, "flights") == (1, 1)
    details = _details(store)
    assert [(d["offset"], d["rows"], d["how"]) for d in details] == [
        (0, 4, "appended"), (4, 4, "appended"), (8, 2, "appended")]
    assert len({d["stream"] for d in details}) == 1
    assert syncer.cycle().pushed == {}  # nothing pending: nothing sent again
    assert _count(cfg) == (10, 10)
    syncer.close()


def test_crash_after_the_append_before_done_is_already_exists(env, tmp_path, aerial_tiles, bigquery_emulator):
    cfg = env(batch_rows=3)
    store = Store(cfg.db_path)
    make_frames(store, aerial_tiles, tmp_path / "in", 5)
    write = _write(bigquery_emulator)
    crashing = write_api.FrameAppends(cfg, write=write)
    real_append = crashing._append

    def append_then_die(*args):
        real_append(*args)
        raise KeyboardInterrupt("power cut after the append, before SQLite marked the batch")

    crashing._append = append_then_die
    with pytest.raises(KeyboardInterrupt):
        crashing.push(store, 100)
    assert _count(cfg) == (3, 3) and store.count_pending("bigquery") == 5

    restarted = write_api.FrameAppends(cfg, write=write)
    assert restarted.push(Store(cfg.db_path), 100) == 5
    assert _count(cfg) == (5, 5)
    assert [(d["offset"], d["how"]) for d in _details(store)] == [(0, "already written"), (3, "appended")]
    assert store.count_pending("bigquery") == 0


def test_offset_past_the_end_moves_the_batch_to_a_new_stream(env, tmp_path, aerial_tiles, bigquery_emulator):
    cfg = env(batch_rows=2)
    store = Store(cfg.db_path)
    make_frames(store, aerial_tiles, tmp_path / "in", 4)
    target = write_api.FrameAppends(cfg, write=_write(bigquery_emulator))
    assert target.push(store, 2) == 2
    first = _details(store)[0]
    # a placement the stream has never reached (say a record restored from an older backup)
    keys, rows = target._next(store, 2)
    b = batches.create(store, "bigquery", keys, rows)
    with store.transaction() as db:
        db.execute("UPDATE sync_batches SET detail = ? WHERE batch_id = ?",
                   [json.dumps({"stream": first["stream"], "offset": 50}), b.batch_id])
    assert target.push(store, 10) == 2
    second = _details(store)[1]
    assert second["stream"] != first["stream"] and second["offset"] == 0
    assert _count(cfg) == (4, 4)


def test_stream_lost_by_an_emulator_restart(make_bigquery, tmp_path, aerial_tiles):
    """The emulator keeps streams in memory: after a restart the table says what landed."""
    bq = make_bigquery()
    cfg = _config(bq, unique("wa"), tmp_path / "data", batch_rows=3)
    init_dataset(cfg)
    store = Store(cfg.db_path)
    make_frames(store, aerial_tiles, tmp_path / "in", 9)
    write = _write(bq)
    target = write_api.FrameAppends(cfg, write=write)
    assert target.push(store, 3) == 3
    crashing = write_api.FrameAppends(cfg, write=write)
    real_append = crashing._append

    def append_then_die(*args):
        real_append(*args)
        raise KeyboardInterrupt

    crashing._append = append_then_die
    with pytest.raises(KeyboardInterrupt):
        crashing.push(store, 3)
    bq.stop()
    bq.start()  # every stream is gone; the tables are kept
    assert _count(cfg) == (6, 6)
    restarted = write_api.FrameAppends(cfg, write=_write(bq))
    assert restarted.push(Store(cfg.db_path), 100) == 6
    assert _count(cfg) == (9, 9)
    hows = [(d["offset"], d["how"]) for d in _details(store)]
    assert hows == [(0, "appended"), (3, "found in table"), (0, "appended")]


def _contents(cfg, table: str) -> list[dict]:
    rows = bq_client(cfg.sync.bigquery.endpoint).query(
        f"SELECT * EXCEPT (synced_at, device_id) FROM `{table_ids(cfg)[table]}` "
        f"WHERE device_id = '{cfg.device_id}'"
    ).result()
    key = "frame_id" if table == "frames" else "flight_id"
    return sorted((dict(r) for r in rows), key=lambda r: r[key])


def test_same_table_contents_as_the_load_job_target(env, tmp_path, aerial_tiles, bigquery_emulator):
    loads = env("load_jobs", batch_rows=4)
    store = Store(loads.db_path)
    made = make_frames(store, aerial_tiles, tmp_path / "in", 7, damaged_every=2)
    store.db["frames"].update(made[0]["frame_id"], {
        "tile_grid": json.dumps([[0.9, 0.2]]), "damaged_tiles": 1,
        "tile_centers": json.dumps([[[8.0, 47.0], [8.001, 47.0]]]),
        "tile_corners": json.dumps([[[7.9995, 47.0005], [8.0005, 47.0005], [8.0015, 47.0005]],
                                    [[7.9995, 46.9995], [8.0005, 46.9995], [8.0015, 46.9995]]]),
    })
    store.end_flight("flight-1")
    store.close()
    # the same outbox, twice: one copy goes by load jobs, the other by the Write API
    appends = _config(bigquery_emulator, loads.sync.bigquery.dataset, tmp_path / "copy", batch_rows=4)
    appends.db_path.parent.mkdir(parents=True)
    shutil.copy(loads.db_path, appends.db_path)
    for cfg, write in ((loads, None), (appends, _write(bigquery_emulator))):
        store = Store(cfg.db_path)
        assert Syncer(cfg, store, build_targets(cfg, write_client=write)).cycle().all_done
    for table, fields in (("frames", FRAME_FIELDS), ("flights", FLIGHT_FIELDS)):
        by_load, by_append = _contents(loads, table), _contents(appends, table)
        assert len(by_load) == (7 if table == "frames" else 1)
        assert by_append == by_load
        assert set(by_load[0]) == {f[0] for f in fields} - {"synced_at", "device_id"}
        if table == "frames":  # the nested record was really compared
            assert any(r["damaged_tile_locations"] for r in by_load)
