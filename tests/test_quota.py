"""BigQuery quotas: a refusal pauses the service with the rows kept, and the retry spends no
second job; load jobs are paced by ``sync.bigquery.min_interval_s``.

The refusals come from :class:`QuotaProxy`, an HTTP proxy in front of the real emulator that
answers load-job inserts the way BigQuery does when a quota is spent.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from emulators import BQ_PROJECT, bq_client, unique
from sync_data import make_frames

from agent.core.config import parse_config
from agent.service.status import format_text
from agent.store.db import Store
from sync import quota
from sync.bigquery import _wrap, init_dataset, table_ids
from sync.loop import Syncer, build_targets


class QuotaProxy:
    """Forwards to the emulator; while ``mode`` is set, answers every load-job insert itself:

    - ``("refuse", reason)``: HTTP 403 with ``reason``: the insert is refused, no job created;
    - ``("failed_job", reason)``: a DONE job whose ``errorResult`` has ``reason``: the job
      "ran" and failed (its id is spent).
    ``refused`` / ``forwarded`` list the job ids of the inserts answered / passed on."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.mode: tuple[str, str] | None = None
        self.refused: list[str] = []
        self.forwarded: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):  # quiet
                pass

            def do_GET(self):
                proxy._forward(self, b"")

            def do_DELETE(self):
                proxy._forward(self, b"")

            def do_PATCH(self):
                proxy._forward(self, self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def do_PUT(self):
                self.do_PATCH()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/upload/") and "/jobs" in self.path:
                    m = re.search(rb'"jobId":\s*"([^"]+)"', body)
                    job_id = m.group(1).decode() if m else "?"
                    if proxy.mode is not None:
                        proxy.refused.append(job_id)
                        proxy._answer(self, job_id)
                        return
                    proxy.forwarded.append(job_id)
                proxy._forward(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="quota-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> QuotaProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, h: BaseHTTPRequestHandler, job_id: str) -> None:
        kind, reason = self.mode
        err = {"reason": reason, "message": f"Quota exceeded ({reason}) for table imports", "domain": "global"}
        if kind == "refuse":
            status, doc = 403, {"error": {"code": 403, "message": err["message"], "errors": [err]}}
        else:
            status, doc = 200, {
                "kind": "bigquery#job",
                "id": f"{BQ_PROJECT}:US.{job_id}",
                "jobReference": {"projectId": BQ_PROJECT, "jobId": job_id, "location": "US"},
                "configuration": {"load": {}, "jobType": "LOAD"},
                "status": {"state": "DONE", "errorResult": err, "errors": [err]},
            }
        data = json.dumps(doc).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _forward(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(h.command, h.path, body=body or None, headers=headers)
        r = conn.getresponse()
        data = r.read()
        h.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        conn.close()


@pytest.fixture(scope="module")
def dataset(bigquery_emulator, tmp_path_factory):
    name = unique("quota")
    cfg = parse_config({"storage": {"dir": str(tmp_path_factory.mktemp("init"))},
                        "sync": {"bigquery": {"project": BQ_PROJECT, "dataset": name,
                                              "endpoint": bigquery_emulator.endpoint}}})
    init_dataset(cfg)
    return name


@pytest.fixture
def proxy(bigquery_emulator):
    p = QuotaProxy(bigquery_emulator.port).start()
    yield p
    p.stop()


def _setup(tmp_path, endpoint: str, dataset: str, **bigquery):
    cfg = parse_config({
        "device_id": unique("drone"),
        "storage": {"dir": str(tmp_path / "data")},
        "sync": {"bigquery": {"project": BQ_PROJECT, "dataset": dataset, "endpoint": endpoint, **bigquery}},
    })
    store = Store(cfg.db_path)
    states: list[tuple[str, str]] = []
    syncer = Syncer(cfg, store, build_targets(cfg, timeout_s=10),
                    on_state=lambda target, state, error: states.append((state, error)),
                    backoff_base_s=0.05)
    return cfg, store, syncer, states


def _remote_rows(cfg, bq_ep: str) -> tuple[int, int]:
    t = table_ids(cfg)["frames"]
    row = next(iter(bq_client(bq_ep).query(
        f"SELECT COUNT(*) AS n, COUNT(DISTINCT frame_id) AS d FROM `{t}` WHERE device_id = '{cfg.device_id}'"
    ).result()))
    return row["n"], row["d"]


def _job_ids(store: Store) -> list[tuple[str, int, str]]:
    return [tuple(r) for r in store.db.execute(
        "SELECT batch_id, attempt, state FROM sync_batches WHERE target = 'bigquery' ORDER BY rowid")]


def test_quota_exceeded_pauses_keeps_rows_and_retries_the_same_job_id(
        tmp_path, aerial_tiles, dataset, proxy, bigquery_emulator, caplog):
    cfg, store, syncer, states = _setup(tmp_path, proxy.endpoint, dataset, quota_window_s=1.5)
    make_frames(store, aerial_tiles, tmp_path / "in", 6)
    proxy.mode = ("refuse", quota.QUOTA)
    caplog.set_level(logging.INFO)
    try:
        first = syncer.cycle()
        assert "quotaExceeded" in first.errors["bigquery"] and "paused until" in first.errors["bigquery"]
        assert first.pending["bigquery"] == 6  # nothing lost, nothing marked
        assert states == [("paused", first.errors["bigquery"])]
        # within the refill window nothing is sent at all: a retry would cost quota again
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            syncer.cycle()
            time.sleep(0.05)
        assert len(proxy.refused) == 1
        assert 0 < syncer.next_wait() <= 1.5
        proxy.mode = None  # the quota refilled
        time.sleep(syncer.next_wait() + 0.05)
        done = syncer.cycle()
        assert done.all_done, done
    finally:
        syncer.close()
    # the refused insert created nothing, so the retry used the SAME job id: one job in all
    assert proxy.forwarded == proxy.refused
    assert [(a, s) for _, a, s in _job_ids(store)] == [(0, "done")]
    assert states[-1] == ("ok", None)
    assert _remote_rows(cfg, bigquery_emulator.endpoint) == (6, 6)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "quotaExceeded" in lines[0], lines  # one line, no credentials hint
    assert not any("credentials" in m or "sync init" in m for m in lines)


def test_rate_limit_pauses_seconds_then_loads_once(tmp_path, aerial_tiles, dataset, proxy, bigquery_emulator, caplog):
    cfg, store, syncer, states = _setup(tmp_path, proxy.endpoint, dataset)
    make_frames(store, aerial_tiles, tmp_path / "in", 5)
    proxy.mode = ("refuse", quota.RATE)
    caplog.set_level(logging.INFO)
    try:
        deadline = time.monotonic() + 20
        res = syncer.cycle()
        while len(proxy.refused) < 3 and time.monotonic() < deadline:
            time.sleep(syncer.next_wait() or 0.01)
            res = syncer.cycle()
        assert len(proxy.refused) == 3 and not res.all_done
        # a rate limit waits seconds (doubling), not until the quota's refill
        assert syncer.next_wait() < 1.0
        proxy.mode = None
        while not res.all_done and time.monotonic() < deadline:
            time.sleep(syncer.next_wait() or 0.01)
            res = syncer.cycle()
        assert res.all_done, res
    finally:
        syncer.close()
    assert set(proxy.refused) == set(proxy.forwarded) and len(proxy.forwarded) == 1
    assert _remote_rows(cfg, bigquery_emulator.endpoint) == (5, 5)
    assert [s for s, _ in states] == ["paused"] * 3 + ["ok"]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # not one per refusal


def test_job_that_failed_for_quota_is_retried_under_a_new_attempt_id(
        tmp_path, aerial_tiles, dataset, proxy, bigquery_emulator):
    cfg, store, syncer, states = _setup(tmp_path, proxy.endpoint, dataset, quota_window_s=0.5)
    make_frames(store, aerial_tiles, tmp_path / "in", 4)
    proxy.mode = ("failed_job", quota.QUOTA)
    try:
        first = syncer.cycle()
        assert "quotaExceeded" in first.errors["bigquery"] and first.pending["bigquery"] == 4
        assert [(a, s) for _, a, s in _job_ids(store)] == [(1, "open")]  # the id is spent
        proxy.mode = None
        time.sleep(syncer.next_wait() + 0.05)
        assert syncer.cycle().all_done
    finally:
        syncer.close()
    # a job that ran cannot be re-run under its id: the retry is the next attempt, same batch
    assert len(proxy.refused) == len(proxy.forwarded) == 1
    assert proxy.refused[0].endswith("_0") and proxy.forwarded[0] == proxy.refused[0][:-2] + "_1"
    assert _remote_rows(cfg, bigquery_emulator.endpoint) == (4, 4)


def test_min_interval_gives_one_job_per_interval(tmp_path, aerial_tiles, dataset, bigquery_emulator):
    cfg, store, syncer, _ = _setup(tmp_path, bigquery_emulator.endpoint, dataset,
                                   min_interval_s=2.0, max_rows=1000)
    try:
        for i in range(5):  # five commits in quick succession, a cycle after each
            make_frames(store, aerial_tiles, tmp_path / f"in{i}", 3, flight_id="f")
            syncer.cycle()
        sizes = [json.loads(r[0]) for r in store.db.execute(
            "SELECT keys FROM sync_batches WHERE target = 'bigquery' ORDER BY rowid")]
        assert [len(k) for k in sizes] == [3]  # the first commit's job, then the pace holds
        assert store.count_pending("bigquery") == 12
        assert 0 < syncer.next_wait() <= 2.0
        time.sleep(syncer.next_wait() + 0.05)
        assert syncer.cycle().all_done
    finally:
        syncer.close()
    sizes = [len(json.loads(r[0])) for r in store.db.execute(
        "SELECT keys FROM sync_batches WHERE target = 'bigquery' ORDER BY rowid")]
    assert sizes == [3, 12]  # everything pending went in the one next job
    assert _remote_rows(cfg, bigquery_emulator.endpoint) == (15, 15)


def test_classification_quota_is_not_a_credentials_problem():
    from google.api_core import exceptions as gexc

    from sync.base import SyncSetupError, TargetUnavailable

    denied = gexc.Forbidden("no", errors=[{"reason": "accessDenied"}])
    spent = gexc.Forbidden("no", errors=[{"reason": "quotaExceeded"}])
    rate = gexc.TooManyRequests("slow down", errors=[{"reason": "rateLimitExceeded"}])
    assert quota.reason_of(denied) is None and isinstance(_wrap(denied, "x"), SyncSetupError)
    assert quota.reason_of(spent) == quota.QUOTA and isinstance(_wrap(spent, "x"), TargetUnavailable)
    assert not isinstance(_wrap(spent, "x"), SyncSetupError)
    assert quota.reason_of(rate) == quota.RATE
    assert quota.reason_of_result({"reason": "rateLimitExceeded"}) == quota.RATE
    assert quota.reason_of_result({"reason": "invalid"}) is None


def test_quota_pause_lasts_until_utc_midnight_or_the_configured_window():
    now = datetime(2026, 12, 1, 22, 30, tzinfo=timezone.utc)
    assert quota.quota_wait_s(now, None) == 90 * 60
    assert quota.quota_wait_s(now, 600.0) == 600.0
    assert [quota.rate_wait_s(n, 1.0, 5.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


def test_status_shows_the_quota_pause():
    msg = "BigQuery quotaExceeded: paused until 2026-12-02T00:00:00Z (bigquery: ... rows kept)"
    text = format_text({
        "running": False, "agent": {}, "engine": {}, "database_exists": False, "database": "db",
        "fps": {}, "backlog": {"bigquery": 6}, "last_sync": {}, "disk": {
            "used_bytes": 0, "budget_bytes": None, "free_bytes": 1, "min_free_bytes": 0},
        "links": {"bigquery": {"state": "paused", "since": "2026-12-01T22:30:00Z", "error": msg}},
    })
    assert "link      bigquery paused since 2026-12-01T22:30:00Z: " + msg in text
