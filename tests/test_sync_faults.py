"""Faults against the real emulators: outages, kill -9 mid-sync, a slow link, lost responses.

In every case the end state is checked the same way: the GCS object count, BigQuery's
COUNT(*) and COUNT(DISTINCT frame_id) all equal what the local database says was to be sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from emulators import (
    BQ_PROJECT,
    bq_client,
    gcs_client,
    unique,
)
from sync_data import make_frames
from util import free_port

from agent.core.config import parse_config
from agent.core.events import EventBus
from agent.core.runtime import AgentContext, Stats
from agent.store.db import Store, wait_for
from sync.bigquery import init_dataset, table_ids
from sync.gcs import init_bucket
from sync.loop import Syncer, SyncLoop, build_targets
from sync.paths import wants_image

ROOT = Path(__file__).resolve().parents[1]


class DelayProxy:
    """A loopback TCP proxy that holds every chunk ``delay`` seconds in each direction: a slow,
    high-latency link. ``delay`` may be changed while it runs."""

    def __init__(self, upstream_port: int, delay: float):
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DelayProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self._loop)
        for t in tasks:
            t.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _handle(self, creader, cwriter) -> None:
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            cwriter.close()
            return
        # A client that gave up closes its side; the request it already sent still reaches the
        # server, over a connection that stays open until the server has answered (a half-close
        # could make the server abandon the request). That is the lost-response case: the remote
        # did the work, the device never heard.
        pumps = [
            asyncio.ensure_future(self._pump(creader, uwriter, eof=False)),
            asyncio.ensure_future(self._pump(ureader, cwriter)),
        ]
        try:
            await asyncio.wait(pumps, timeout=20)
        finally:
            for t in pumps:
                t.cancel()
            # retrieve every outcome, so no "exception was never retrieved" at interpreter exit
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (cwriter, uwriter):
                w.close()

    async def _pump(self, reader, writer, eof: bool = True) -> None:
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
            if eof and writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass


def _cfg(tmp_path: Path, gcs_ep: str, bq_ep: str, dataset: str, bucket: str, **sync) -> dict:
    return {
        "device_id": unique("drone"),
        "storage": {"dir": str(tmp_path / "data")},
        "sync": {
            "gcs": {"bucket": bucket, "endpoint": gcs_ep},
            "bigquery": {"project": BQ_PROJECT, "dataset": dataset, "endpoint": bq_ep},
            "upload_images": "all",
            **sync,
        },
    }


def _assert_exactly_once(cfg, store: Store, gcs_ep: str, bq_ep: str) -> None:
    frames = store.frames()
    wanted = [f for f in frames if wants_image(cfg, f)]
    blobs = list(gcs_client(gcs_ep).list_blobs(cfg.sync.gcs.bucket, prefix=f"skysift/{cfg.device_id}/"))
    assert len(blobs) == len(wanted) == len({b.name for b in blobs})
    t = table_ids(cfg)["frames"]
    row = next(iter(bq_client(bq_ep).query(
        f"SELECT COUNT(*) AS n, COUNT(DISTINCT frame_id) AS d FROM `{t}` WHERE device_id = '{cfg.device_id}'"
    ).result()))
    assert (row["n"], row["d"]) == (len(frames), len(frames))
    for target in ("bigquery", "gcs"):
        bad = store.db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE target = ? AND state != 'done'", [target]
        ).fetchone()[0]
        assert bad == 0


@pytest.fixture(scope="module")
def shared(gcs_emulator, bigquery_emulator, tmp_path_factory):
    names = {"bucket": unique("faults").replace("_", "-"), "dataset": unique("faults")}
    cfg = parse_config(_cfg(tmp_path_factory.mktemp("init"), gcs_emulator.endpoint,
                            bigquery_emulator.endpoint, names["dataset"], names["bucket"]))
    init_bucket(cfg)
    init_dataset(cfg)
    return names, gcs_emulator, bigquery_emulator


def test_emulators_stopped_mid_sync_backlog_drains_by_itself(tmp_path, aerial_tiles, make_gcs, make_bigquery, caplog):
    gcs, bq = make_gcs(), make_bigquery()
    cfg = parse_config(_cfg(tmp_path, gcs.endpoint, bq.endpoint, "outage", "outage-bucket",
                            interval_s=0.5, backoff_max_s=1.0, batch_rows=10))
    init_bucket(cfg)
    init_dataset(cfg)
    store = Store(cfg.db_path)
    bus = EventBus()
    states: list[tuple[str, str]] = []
    bus.subscribe("sync_state", lambda target, state, error: states.append((target, state)))
    ctx = AgentContext(cfg=cfg, bus=bus, stats=Stats(), stop=threading.Event())
    loop = SyncLoop(cfg, backoff_base_s=0.2)
    caplog.set_level(logging.INFO, logger="agent.core.backoff")
    loop.start(ctx)
    try:
        rows = make_frames(store, aerial_tiles, tmp_path / "in", 60)
        bus.publish("frames_committed", rows=rows)
        assert wait_for(lambda: store.count_pending("bigquery") < 60
                        or store.count_pending("gcs") < 60, 60)
        gcs.stop()
        bq.stop()
        # ingest goes on while the link is down; the loop must report the outage
        more = make_frames(store, aerial_tiles, tmp_path / "in2", 30)
        bus.publish("frames_committed", rows=more)
        assert wait_for(lambda: any(s == "down" for _, s in states), 60)
        assert store.count_pending("bigquery") + store.count_pending("gcs") > 0
        gcs.start()
        bq.start()
        # nobody calls sync_now: the timer and the backoff bring the backlog home
        assert wait_for(lambda: store.count_pending("bigquery") == 0
                        and store.count_pending("gcs") == 0, 120, interval=0.5)
    finally:
        loop.stop()
    assert ("bigquery", "ok") in states and ("gcs", "ok") in states
    assert "sync_now" in ctx.commands
    # one line when each link drops, one when it recovers: not one per retry
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.core.backoff"]
    for link in ("bigquery", "gcs"):
        assert sum(f"sync {link}: link down" in m for m in lines) == 1, lines
        assert sum(f"sync {link}: recovered" in m for m in lines) == 1, lines
    _assert_exactly_once(cfg, store, gcs.endpoint, bq.endpoint)


def _batches(db: Path) -> tuple[int, int]:
    """(batches ever created, batches open now)."""
    s = Store(db, readonly=True)
    try:
        return s.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(state = 'open'), 0) FROM sync_batches"
        ).fetchone()
    finally:
        s.close()


def _gcs_done(db: Path) -> int:
    s = Store(db, readonly=True)
    try:
        return s.db.execute("SELECT COUNT(*) FROM deliveries WHERE target = 'gcs'").fetchone()[0]
    finally:
        s.close()


def test_kill9_during_uploads_and_bigquery_writes(tmp_path, aerial_tiles, shared):
    names, gcs, bq = shared
    gproxy, bproxy = DelayProxy(gcs.port, 0.03).start(), DelayProxy(bq.port, 0.03).start()
    data = _cfg(tmp_path, gproxy.endpoint, bproxy.endpoint, names["dataset"], names["bucket"], batch_rows=8)
    cfg_file = tmp_path / "skysift.yaml"
    cfg_file.write_text(yaml.safe_dump(data))
    cfg = parse_config(data)
    store = Store(cfg.db_path)
    make_frames(store, aerial_tiles, tmp_path / "in", 64)
    store.end_flight("flight-1")
    cmd = [sys.executable, "-m", "agent", "-c", str(cfg_file), "sync", "--once", "--timeout", "60"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    kills = {"bigquery": 0, "gcs": 0}
    try:
        # rows go first, so three kills while a load job is in flight, then three mid-upload
        for phase in ["bigquery"] * 3 + ["gcs"] * 3:
            before = _gcs_done(cfg.db_path) if phase == "gcs" else _batches(cfg.db_path)[0]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def busy(proc=proc, phase=phase, before=before) -> bool:
                if proc.poll() is not None:
                    return True
                if phase == "bigquery":  # a new batch was recorded and its load job is in flight
                    created, open_now = _batches(cfg.db_path)
                    return created > before and open_now > 0
                return _gcs_done(cfg.db_path) > before  # uploads done and more in flight

            if wait_for(busy, 60, 0.01) and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills[phase] += 1
            proc.wait(30)
        # the restart: one clean run must finish everything and exit 0
        final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stdout + final.stderr
    finally:
        gproxy.stop()
        bproxy.stop()
    assert kills == {"bigquery": 3, "gcs": 3}, kills
    _assert_exactly_once(cfg, store, gcs.endpoint, bq.endpoint)
    flights = table_ids(cfg)["flights"]
    n = next(iter(bq_client(bq.endpoint).query(
        f"SELECT COUNT(*) FROM `{flights}` WHERE device_id = '{cfg.device_id}'").result()))[0]
    assert n == 1


def test_slow_link_and_lost_responses_never_duplicate(tmp_path, aerial_tiles, shared):
    """Replies slower than the client's timeout: the remote did the work but the device never
    heard. The retries (same job id, create-only uploads) must find it and not write twice."""
    names, gcs, bq = shared
    gproxy, bproxy = DelayProxy(gcs.port, 1.2).start(), DelayProxy(bq.port, 1.2).start()
    cfg = parse_config(_cfg(tmp_path, gproxy.endpoint, bproxy.endpoint, names["dataset"],
                            names["bucket"], upload_images="damaged", batch_rows=50))
    store = Store(cfg.db_path)
    make_frames(store, aerial_tiles, tmp_path / "in", 12, damaged_every=2)
    syncer = Syncer(cfg, store, build_targets(cfg, timeout_s=0.5), backoff_base_s=0.05)
    try:
        first = syncer.cycle()
        assert first.errors and not first.all_done  # every reply was too late
        time.sleep(5)  # the delayed requests reach the emulators and are carried out
        gproxy.delay = bproxy.delay = 0.02  # the link gets better (still a proxy in the way)
        deadline = time.monotonic() + 60
        res = first
        while not res.all_done and time.monotonic() < deadline:
            res = syncer.cycle(deadline=deadline)
            time.sleep(syncer.next_wait() or 0.05)
        assert res.all_done, res
    finally:
        syncer.close()
        gproxy.stop()
        bproxy.stop()
    _assert_exactly_once(cfg, store, gcs.endpoint, bq.endpoint)
    hows = [r[0] for r in store.db.execute(
        "SELECT json_extract(detail, '$.how') FROM sync_batches WHERE state = 'done'")]
    assert "found existing job" in hows  # the lost-response path really ran
