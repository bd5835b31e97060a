"""The sync loop component (wake-ups, sync_now, stop) and its one retry helper (Backoff)."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import threading

from emulators import BQ_PROJECT, unique
from sync_data import make_frames

from agent.core.backoff import Backoff
from agent.core.config import parse_config
from agent.core.events import EventBus
from agent.core.runtime import AgentContext, Stats
from agent.store.db import Store, wait_for
from sync.bigquery import init_dataset
from sync.gcs import init_bucket
from sync.loop import SyncLoop


def test_loop_wakes_on_new_frames_and_on_sync_now(tmp_path, aerial_tiles, gcs_emulator, bigquery_emulator):
    cfg = parse_config({
        "device_id": unique("loop"),
        "storage": {"dir": str(tmp_path / "data")},
        "sync": {
            "gcs": {"bucket": unique("loop").replace("_", "-"), "endpoint": gcs_emulator.endpoint},
            "bigquery": {"project": BQ_PROJECT, "dataset": unique("loop"), "endpoint": bigquery_emulator.endpoint},
            "interval_s": 3600,  # the timer never fires here: only the wake-ups can drain
        },
    })
    init_bucket(cfg)
    init_dataset(cfg)
    store = Store(cfg.db_path)
    bus = EventBus()
    ctx = AgentContext(cfg=cfg, bus=bus, stats=Stats(), stop=threading.Event())
    loop = SyncLoop(cfg)
    loop.start(ctx)
    try:
        assert loop._thread.name == "skysift-sync" and loop._thread.is_alive()
        rows = make_frames(store, aerial_tiles, tmp_path / "a", 5)
        bus.publish("frames_committed", rows=rows)
        assert wait_for(lambda: store.count_pending("bigquery") == 0, 60)
        make_frames(store, aerial_tiles, tmp_path / "b", 4)  # committed without an event
        assert ctx.command("sync_now") is True
        assert wait_for(lambda: store.count_pending("bigquery") == 0
                        and store.count_pending("gcs", where="f.label = 'damaged'") == 0, 60)
        assert wait_for(lambda: ctx.stats.sync_pending.get("bigquery") == 0, 10)
    finally:
        loop.stop()
    assert not loop._thread.is_alive()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_delays_grow_exponentially_with_jitter_and_are_capped():
    clock = Clock()
    b = Backoff("t", base_s=1.0, cap_s=30.0, clock=clock, rng=random.Random(1))
    ceilings = []
    for _ in range(10):
        b.failure("boom")
        ceilings.append(min(30.0, 2 ** (b.failures - 1)))
        assert 0 <= b.wait_s() <= ceilings[-1]
        assert not b.ready() or b.wait_s() == 0
    assert ceilings[-1] == 30.0
    waits = []
    for _ in range(200):  # jitter: spread over the whole window, never above the cap
        b.failure("boom")
        waits.append(b.wait_s())
    assert max(waits) <= 30.0 and min(waits) < 10.0 < max(waits)
    clock.t += 31
    assert b.ready()


def test_one_down_line_rate_limited_reminders_one_recovered_line(caplog):
    clock = Clock()
    b = Backoff("sync gcs", base_s=1.0, cap_s=5.0, remind_every_s=60.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="agent.core.backoff"):
        assert b.failure("connection refused") is True
        for _ in range(50):  # fifty retries within a minute: no new lines
            clock.t += 1
            assert b.failure("connection refused") is False
        clock.t += 20  # past the reminder interval: one reminder
        b.failure("connection refused")
        assert b.success() is True
        assert b.success() is False  # already up: nothing to say
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 3
    assert "link down" in msgs[0] and "still down after 52 attempts" in msgs[1]
    assert "recovered after 52 failed attempts" in msgs[2]
    assert b.ready() and not b.down


def test_sync_bench_small_run_reports_both_approaches(tmp_path, shared_data, gcs_emulator, bigquery_emulator):
    from agent.bench.sync_bench import run_sync_bench

    res = run_sync_bench(n_frames=30, work_dir=tmp_path, data_dir=shared_data, baseline_n=5,
                         gcs_endpoint=gcs_emulator.endpoint, bq_endpoint=bigquery_emulator.endpoint)
    assert res["n_frames"] == 30 and res["baseline_n"] == 5
    for k in ("rows_per_s", "images_per_s", "baseline_rows_per_s", "baseline_images_per_s"):
        assert res[k] > 0
    assert "extrapolated" in res["note"] and "| skysift" in res["markdown"]


_COUNT_WITHOUT_GOOGLE = """
import json, sys
sys.modules["google"] = None  # as if google-cloud-* were not installed: any import of it fails
import sync
from agent.core.config import parse_config
from agent.store.db import Store

out = {}
for upload in ("none", "damaged", "all"):
    cfg = parse_config({"storage": {"dir": sys.argv[1]}, "mqtt": {"host": "127.0.0.1"},
                        "sync": {"gcs": {"bucket": "b"}, "bigquery": {"project": "p"},
                                 "upload_images": upload}})
    store = Store(cfg.db_path)
    if upload == "none":
        store.ensure_flight("f1", source="folder")
        store.add_frames([{"frame_id": f"{i:032x}", "flight_id": "f1", "source": f"f1/{i}.png",
                           "status": "classified", "label": "damaged" if i < 2 else "undamaged"}
                          for i in range(5)])
        store.end_flight("f1")
        store.mark_delivered("gcs", [f"{0:032x}"])
        store.mark_delivered("mqtt", [f"{i:032x}" for i in range(4)])
    out[upload] = [sync.per_target(cfg, store), sync.backlog(cfg, store)]
    store.close()
print(json.dumps(out))
"""


def test_backlog_follows_upload_images_and_needs_no_cloud_library(tmp_path):
    r = subprocess.run([sys.executable, "-c", _COUNT_WITHOUT_GOOGLE, str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # 5 frames, 2 damaged (one already uploaded), one ended flight; MQTT acknowledged 4
    assert out["none"] == [{"bigquery": 5, "bigquery_flights": 1}, {"bigquery": 5, "mqtt": 1}]
    assert out["damaged"] == [{"bigquery": 5, "bigquery_flights": 1, "gcs (damaged images)": 1},
                              {"bigquery": 5, "gcs": 1, "mqtt": 1}]
    assert out["all"] == [{"bigquery": 5, "bigquery_flights": 1, "gcs (damaged images)": 1,
                           "gcs (rest images)": 3}, {"bigquery": 5, "gcs": 4, "mqtt": 1}]
