"""End to end: the real `skysift run` publishing to a real Mosquitto, then killed with -9."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
from emulators import BQ_PROJECT, unique
from mosquitto import Subscriber, mosquitto  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
DEV = "drone-e2e"
BASE = f"skysift/{DEV}"
TELEMETRY = "mavlink/drone-e2e/position"



def _stop_agent(proc, log, sub, sig: int, wait_s: float) -> None:
    """The test's cleanup: the agent it started (by PID, if still running), its log, the subscriber."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        proc.wait(wait_s)
    log.close()
    sub.stop()

def test_skysift_run_live_feed_telemetry_and_last_will(tmp_path, mosquitto, aerial_tiles):  # noqa: F811
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = tmp_path / "skysift.yaml"
    cfg.write_text(yaml.safe_dump({
        "device_id": DEV,
        "source": {"folder": str(inbox), "settle_seconds": 0.2, "rescan_seconds": 0.5},
        "storage": {"dir": str(tmp_path / "data"), "min_free_mb": 0},
        "model": {"devices": ["CPU"], "cache_dir": str(tmp_path / "ov-cache")},
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "keepalive": 5,
                 "telemetry_topic": TELEMETRY, "telemetry_max_age_s": 5,
                 "flight_summary_interval_s": 0.5},
        "log_level": "info",
    }))
    sub = Subscriber(mosquitto, [f"{BASE}/#"]).start()
    log = open(tmp_path / "agent.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([sys.executable, "-m", "agent", "-c", str(cfg), "run"], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        # The status command answers once the agent is up and subscribed.
        deadline = time.monotonic() + 90
        while not sub.on(f"{BASE}/cmd/status/reply"):
            assert proc.poll() is None, (tmp_path / "agent.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "agent.log").read_text()[-3000:]
            sub.publish(f"{BASE}/cmd/status", {"id": "up?"})
            time.sleep(0.5)
        status = sub.on(f"{BASE}/cmd/status/reply")[0].json()["result"]
        assert status["state"] == "online" and status["engine"] in ("openvino", "tensorflow")

        # A position from the "autopilot", then frames taken at that moment (no EXIF GPS:
        # the capture time of these PNG tiles is their file time).
        t = time.time() - 1
        sub.publish(TELEMETRY, {"lat": -17.7333, "lon": 168.3273, "alt": 85.0, "time": t})
        flight = inbox / "sector-7"
        flight.mkdir()
        files = aerial_tiles["damaged"][:3] + aerial_tiles["undamaged"][:3]
        for src in files:
            dest = flight / src.name
            shutil.copy(src, dest)
            os.utime(dest, (t, t))
        (flight / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        os.utime(flight / "broken.jpg", (t, t))

        frames = sub.wait_for(lambda ms: (f := [m.json() for m in ms if m.topic == f"{BASE}/frames"])
                              and len({x["frame_id"] for x in f}) >= 7 and f, timeout=90)
        classified = [f for f in frames if f["status"] == "classified"]
        rejected = [f for f in frames if f["status"] == "rejected"]
        assert len({f["frame_id"] for f in classified}) == 6 and len(rejected) >= 1
        assert rejected[0]["reason"] and rejected[0]["label"] is None
        for f in classified:
            assert f["label"] in ("damaged", "undamaged") and 0.0 <= f["p_damaged"] <= 1.0
            assert f["geo_source"] == "telemetry", f
            assert (f["lat"], f["lon"]) == (-17.7333, 168.3273)
        fid = classified[0]["flight_id"]
        sub.wait_for(lambda ms: [m for m in ms if m.topic == f"{BASE}/flights/{fid}"
                                 and m.json()["frames"] == 7])

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        last = sub.wait_for(lambda ms: [m for m in ms if m.topic == f"{BASE}/status"
                                        and m.json()["state"] == "offline"], timeout=20)
        assert last[-1].json() == {"state": "offline", "device_id": DEV}
    finally:
        _stop_agent(proc, log, sub, signal.SIGKILL, 10)


def test_mqtt_status_backlog_reaches_zero_after_a_full_sync(
    tmp_path, mosquitto, aerial_tiles, gcs_emulator, bigquery_emulator  # noqa: F811
):
    """With ``upload_images: damaged`` the undamaged images are never owed to GCS: once the
    sync loop has pushed everything, the MQTT status says the backlog is 0 everywhere."""
    inbox = tmp_path / "inbox" / "survey-1"
    inbox.mkdir(parents=True)
    cfg = tmp_path / "skysift.yaml"
    cfg.write_text(yaml.safe_dump({
        "device_id": DEV,
        "source": {"folder": str(tmp_path / "inbox"), "settle_seconds": 0.2, "rescan_seconds": 0.5},
        "storage": {"dir": str(tmp_path / "data"), "min_free_mb": 0},
        "model": {"devices": ["CPU"], "cache_dir": str(tmp_path / "ov-cache")},
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "flight_summary_interval_s": 0.5},
        "sync": {
            "gcs": {"bucket": unique("mqtt").replace("_", "-"), "endpoint": gcs_emulator.endpoint},
            "bigquery": {"project": BQ_PROJECT, "dataset": unique("mqtt"),
                         "endpoint": bigquery_emulator.endpoint},
            "upload_images": "damaged",
        },
    }))
    skysift = [sys.executable, "-m", "agent", "-c", str(cfg)]
    init = subprocess.run([*skysift, "sync", "init"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    sub = Subscriber(mosquitto, [f"{BASE}/#"]).start()
    log = open(tmp_path / "agent.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([*skysift, "run"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        for src in aerial_tiles["damaged"][:2] + aerial_tiles["undamaged"][:3]:
            shutil.copy(src, inbox / src.name)
        deadline = time.monotonic() + 120
        backlog = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "agent.log").read_text()[-3000:]
            sub.publish(f"{BASE}/cmd/status", {"id": "backlog?"})
            time.sleep(0.5)
            replies = [m.json().get("result") or {} for m in sub.on(f"{BASE}/cmd/status/reply")]
            done = [r for r in replies if (r.get("frames") or {}).get("total") == 5]
            backlog = done[-1]["backlog"] if done else None
            if backlog == {"mqtt": 0, "gcs": 0, "bigquery": 0}:
                break
        assert backlog == {"mqtt": 0, "gcs": 0, "bigquery": 0}, backlog
        # the retained status message a dashboard reads says the same
        assert sub.on(f"{BASE}/status")[-1].json()["backlog"] == backlog
    finally:
        _stop_agent(proc, log, sub, signal.SIGTERM, 60)


class GatedProxy:
    """A TCP proxy to the broker that holds each connection until ``gate()`` is true: the
    agent's CONNECT waits, so the broker link comes up only when the test says (deterministic,
    unlike a race between a quick run and a quick connect)."""

    def __init__(self, port: int, gate):
        self.port, self.gate = port, gate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listen_port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + 60
        while not self.gate() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            up = socket.create_connection(("127.0.0.1", self.port))
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def _agent_cfg(tmp_path: Path, inbox: Path, port: int, storage: Path) -> Path:
    cfg = tmp_path / f"{storage.name}.yaml"
    cfg.write_text(yaml.safe_dump({
        "device_id": DEV,
        "source": {"folder": str(inbox), "settle_seconds": 0.2, "rescan_seconds": 0.5},
        "storage": {"dir": str(storage), "min_free_mb": 0},
        "model": {"devices": ["CPU"], "cache_dir": str(tmp_path / "ov-cache")},
        "mqtt": {"host": "127.0.0.1", "port": port, "flight_summary_interval_s": 60},
        "log_level": "info",
    }))
    return cfg


def test_run_once_publishes_every_frame_even_when_the_broker_connects_late(
    tmp_path, mosquitto, aerial_tiles  # noqa: F811
):
    """The broker link comes up only once the run is stopping (its flight ended): the frames
    still reach a subscriber, every time (before the stop drained MQTT: 1 run in 4 lost them)."""
    flight = tmp_path / "inbox" / "sector-3"
    flight.mkdir(parents=True)
    for src in aerial_tiles["damaged"][:2] + aerial_tiles["undamaged"][:1]:
        shutil.copy(src, flight / src.name)
    sub = Subscriber(mosquitto, [f"{BASE}/#"]).start()
    try:
        for i in range(4):
            log_path = tmp_path / f"run-{i}.log"
            log_path.write_text("")
            proxy = GatedProxy(mosquitto.port, lambda p=log_path: " ended" in p.read_text())
            cfg = _agent_cfg(tmp_path, tmp_path / "inbox", proxy.listen_port, tmp_path / f"data-{i}")
            with open(log_path, "w") as log:
                run = subprocess.run([sys.executable, "-m", "agent", "-c", str(cfg), "run", "--once"],
                                     cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=180)
            proxy.close()
            assert run.returncode == 0, log_path.read_text()[-3000:]
            n = 3 * (i + 1)  # the same 3 tiles each run: fresh storage, so sent again
            sub.wait_for(lambda ms, n=n: len([m for m in ms if m.topic == f"{BASE}/frames"]) >= n,
                         timeout=10)
    finally:
        sub.stop()


def test_sigterm_leaves_the_flight_ended_and_the_status_offline(tmp_path, mosquitto, aerial_tiles):  # noqa: F811
    flight = tmp_path / "inbox" / "sector-9"
    flight.mkdir(parents=True)
    cfg = _agent_cfg(tmp_path, tmp_path / "inbox", mosquitto.port, tmp_path / "data")
    sub = Subscriber(mosquitto, [f"{BASE}/frames"]).start()
    log = open(tmp_path / "agent.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([sys.executable, "-m", "agent", "-c", str(cfg), "run"], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        for src in aerial_tiles["damaged"][:3]:
            shutil.copy(src, flight / src.name)
        sub.wait_for(lambda ms: len(ms) >= 3, timeout=120)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "agent.log").read_text()[-3000:]
    finally:
        _stop_agent(proc, log, sub, signal.SIGKILL, 10)
    late = Subscriber(mosquitto, [f"{BASE}/status", f"{BASE}/flights/#"]).start()
    try:
        got = late.wait_for(lambda ms: len({m.topic for m in ms}) >= 2 and ms)
        retained = {m.topic: m.json() for m in got if m.retain}
        assert retained[f"{BASE}/flights/sector-9"]["state"] == "ended", retained
        assert retained[f"{BASE}/status"] == {"state": "offline", "device_id": DEV}
    finally:
        late.stop()
