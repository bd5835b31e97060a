"""The fleet simulation (agent.bench.fleet): many devices syncing at once through faults.

Run alone with ``pytest -m fleet``. A fleet of 20 devices in 4 processes syncs into one
fake-gcs-server and one local-bigquery, while one process is killed with SIGKILL, the proxy in
front of BigQuery answers 403 quotaExceeded, both emulators are stopped and restarted, and
another process is killed; every frame must then be in GCS and in BigQuery exactly once.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from emulators import BQ_PROJECT

from agent.bench.fleet import FleetOptions, run_fleet
from agent.bench.fleet_proxy import QuotaProxy
from agent.bench.report import to_markdown
from sync.emulators import fake_gcs_binary, local_bigquery_binary

pytestmark = [
    pytest.mark.fleet,
    pytest.mark.skipif(fake_gcs_binary() is None or local_bigquery_binary() is None,
                       reason="GCS or BigQuery emulator missing (see tests/emulators.py)"),
]


def _insert_job(endpoint: str) -> tuple[int, dict]:
    body = json.dumps({"configuration": {"query": {"query": "SELECT 1", "useLegacySql": False}}}).encode()
    req = urllib.request.Request(f"{endpoint}/bigquery/v2/projects/{BQ_PROJECT}/jobs", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_quota_proxy_refuses_job_inserts_for_a_window_then_lets_them_through(bigquery_emulator):
    proxy = QuotaProxy(bigquery_emulator.port, quota_after=1, quota_window_s=1.0).start()
    try:
        assert _insert_job(proxy.endpoint)[0] == 200
        status, body = _insert_job(proxy.endpoint)
        assert status == 403
        assert body["error"]["code"] == 403
        assert body["error"]["errors"][0]["reason"] == "quotaExceeded"
        # reads are not job inserts: they pass during the window
        with urllib.request.urlopen(f"{proxy.endpoint}/bigquery/v2/projects/{BQ_PROJECT}/datasets") as r:
            assert r.status == 200
        time.sleep(1.1)
        assert _insert_job(proxy.endpoint)[0] == 200
        assert proxy.stats()["jobs_created"] == 2 and proxy.stats()["quota_refusals"] == 1
    finally:
        proxy.stop()


def test_fleet_of_20_devices_delivers_every_frame_exactly_once(tmp_path, shared_data: Path):
    opts = FleetOptions(devices=20, frames_per_device=20, devices_per_process=5, work_dir=tmp_path,
                        timeout_s=400, data_dir=shared_data / "aerial-damage")
    res = run_fleet(opts)
    c = res["checks"]
    frames = 20 * 20
    # raw rows, not only the view: deterministic load jobs must never write a row twice
    assert (c["gcs_objects"], c["gcs_distinct_objects"], c["bq_rows"], c["bq_distinct_device_frame"],
            c["bq_dedup_view_rows"], c["local_classified_frames"]) == (frames,) * 6
    assert c["bq_flight_rows"] == 20 and c["local_undelivered"] == 0
    assert res["exactly_once"]
    # the faults really happened, while there was work to lose
    kills = [e for e in res["events"] if e["event"].startswith("kill -9")]
    assert len(kills) == 2 and all(e["owed_at_kill"] > 0 for e in kills)
    assert any(e["event"] == "emulators restarted" for e in res["events"])
    assert res["proxy"]["quota_refusals"] > 0
    # every job the emulator ran went through the proxy; a refused insert or a 409 for a job id
    # already sent creates none, so only a job that failed remotely is ever run twice
    if c["emulator_load_jobs"] is not None:
        assert c["emulator_load_jobs"] == res["load_jobs"]
    assert res["load_jobs_minimum"] <= res["load_jobs"] < 2 * res["load_jobs_minimum"]
    assert res["jobs_per_1000_rows"] == pytest.approx(res["load_jobs"] * 1000 / frames, abs=0.1)
    assert res["peak_mb_devices_sum"] > 0 and res["processes"] == 4
    for pid in res["pids"]:  # every emulator and device process was stopped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    md = to_markdown({**_REPORT, "fleet": res})
    assert "## Fleet" in md and "Exactly once: yes" in md and f"{frames} rows" in md


_REPORT = {
    "started_at": "2026-01-01T00:00:00Z",
    "machine": {"cpu": "x", "cores": 2, "memory_mb": 1024, "os": "Linux", "versions": {}},
}


def test_bench_report_says_when_the_fleet_failed():
    md = to_markdown({**_REPORT, "fleet": {"error": "timed out after 900 s waiting for the quota window"}})
    assert "## Fleet" in md and "Failed: timed out" in md
