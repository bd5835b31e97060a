"""sd_notify over a real NOTIFY_SOCKET datagram socket: READY, STATUS, WATCHDOG, STOPPING, and
the watchdog rule (pings only while the pipeline makes progress or idles with live loops)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.core.config import parse_config
from agent.core.events import EventBus
from agent.core.runtime import AgentContext, Stats
from agent.service.sdnotify import (
    Notifier,
    PipelineHealth,
    SdNotify,
    status_line,
    watchdog_interval,
)
from agent.store.db import Store

ROOT = Path(__file__).resolve().parents[1]


class NotifyListener:
    """The service manager's side: a datagram socket collecting every message."""

    def __init__(self, address: str | bytes):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self, since: float = 0.0) -> list[str]:
        return [ln for t, m in list(self.messages) if t >= since for ln in m.split("\n")]

    def wait_for(self, line_prefix: str, timeout: float, since: float = 0.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ln in self.lines(since):
                if ln.startswith(line_prefix):
                    return ln
            time.sleep(0.05)
        raise AssertionError(f"no {line_prefix!r} within {timeout}s; got {self.lines(since)}")

    def count(self, line: str, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(
            1 for t, m in list(self.messages) if since <= t <= until for ln in m.split("\n") if ln == line
        )

    def close(self) -> None:
        self._stop.set()
        self._t.join(timeout=2)
        self.sock.close()


@pytest.fixture
def listener(tmp_path):
    path = tmp_path / "notify.sock"
    lst = NotifyListener(str(path))
    yield lst, str(path)
    lst.close()


def test_protocol_messages_on_a_path_socket(listener):
    lst, path = listener
    sd = SdNotify(path)
    assert sd.enabled
    assert sd.ready("warming up")
    assert sd.status("12 frames, 1.5 frames/s")
    assert sd.watchdog()
    assert sd.stopping()
    sd.close()
    lst.wait_for("STOPPING=1", 5)
    msgs = [m for _, m in lst.messages]
    assert msgs[0] == "READY=1\nSTATUS=warming up"
    assert msgs[1] == "STATUS=12 frames, 1.5 frames/s"
    assert msgs[2] == "WATCHDOG=1"
    assert msgs[3].startswith("STOPPING=1")


def test_abstract_namespace_socket():
    name = f"@skysift-test-{os.getpid()}-{time.monotonic_ns()}"
    lst = NotifyListener(b"\0" + name[1:].encode())
    try:
        sd = SdNotify(name)
        assert sd.ready()
        lst.wait_for("READY=1", 5)
    finally:
        lst.close()


def test_without_notify_socket_everything_is_a_noop(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    sd = SdNotify()
    assert not sd.enabled
    assert sd.ready() is False
    assert sd.watchdog() is False


def test_watchdog_interval_reads_usec_and_pid(monkeypatch):
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    assert watchdog_interval() == 20.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 20.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval() is None


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_health_rules_with_a_controlled_clock():
    clock = FakeClock()
    stats = Stats()
    health = PipelineHealth(stats, stale_s=10, clock=clock)
    stats.heartbeats.update(source=clock.t, commit=clock.t)
    # idle, loops turning
    assert health.check() and health.reason == "idle"
    # progress
    clock.t += 4
    stats.last_progress_monotonic = clock.t
    stats.heartbeats.update(source=clock.t, commit=clock.t)
    assert health.check() and health.reason == "progress"
    # work queued, a slow batch: still fine for a while
    stats.queue_depth = 5
    clock.t += 6
    stats.heartbeats.update(source=clock.t, commit=clock.t)
    assert health.check() and health.reason == "busy"
    # queued and nothing committed for longer than stale_s: a hung inference
    clock.t += 6
    stats.heartbeats.update(source=clock.t, commit=clock.t)
    assert not health.check()
    assert "queued" in health.reason
    # progress again: healthy again
    stats.last_progress_monotonic = clock.t
    assert health.check()
    # a loop that stops beating (frozen thread) stops the pings even when the queue is empty
    stats.queue_depth = 0
    clock.t += 11
    stats.heartbeats["source"] = clock.t
    assert not health.check()
    assert "commit" in health.reason


def _ctx(tmp_path: Path, **cfg) -> AgentContext:
    data = {"storage": {"dir": str(tmp_path / "data")}, **cfg}
    return AgentContext(cfg=parse_config(data), bus=EventBus(), stats=Stats(), stop=threading.Event())


def test_notifier_pings_while_alive_and_stops_when_the_pipeline_freezes(listener, tmp_path, monkeypatch):
    lst, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "600000")  # 0.6 s: a tick every 0.3 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    ctx = _ctx(tmp_path)
    alive = threading.Event()
    alive.set()
    done = threading.Event()

    def pipeline_loop():  # stands in for the source and commit loops of agent/pipeline.py
        while not done.is_set():
            if alive.is_set():
                ctx.stats.beat("source")
                ctx.stats.beat("commit")
            time.sleep(0.05)

    t = threading.Thread(target=pipeline_loop, daemon=True)
    t.start()
    notifier = Notifier(status_interval_s=0.2, min_stale_s=0.5)
    try:
        notifier.start(ctx)
        lst.wait_for("READY=1", 5)
        t0 = time.monotonic()
        lst.wait_for("WATCHDOG=1", 5, since=t0)
        lst.wait_for("STATUS=", 5, since=t0)

        # Freeze the loops: after the stale time no more pings, however long we wait.
        alive.clear()
        time.sleep(1.0)  # > stale (0.5 s) + one tick
        frozen = time.monotonic()
        time.sleep(1.5)
        assert lst.count("WATCHDOG=1", since=frozen) == 0

        # The loops turn again: pings resume.
        alive.set()
        resumed = time.monotonic()
        lst.wait_for("WATCHDOG=1", 5, since=resumed)
    finally:
        done.set()
        notifier.stop()
    lst.wait_for("STOPPING=1", 5)


def test_notifier_withholds_pings_when_queued_frames_make_no_progress(listener, tmp_path, monkeypatch):
    lst, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "600000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    ctx = _ctx(tmp_path)
    ctx.stats.queue_depth = 7  # frames waiting; no loop heartbeats registered at all
    notifier = Notifier(status_interval_s=0.2, min_stale_s=0.5)
    committing = threading.Event()
    committing.set()
    done = threading.Event()

    def commit_loop():
        while not done.is_set():
            if committing.is_set():
                ctx.stats.last_progress_monotonic = time.monotonic()
            time.sleep(0.1)

    t = threading.Thread(target=commit_loop, daemon=True)
    t.start()
    try:
        notifier.start(ctx)
        lst.wait_for("WATCHDOG=1", 5)
        committing.clear()  # inference hangs: the queue stays full
        time.sleep(1.0)
        stalled = time.monotonic()
        time.sleep(1.5)
        assert lst.count("WATCHDOG=1", since=stalled) == 0
    finally:
        done.set()
        notifier.stop()


def test_status_line_has_throughput_and_backlog(tmp_path, listener, monkeypatch):
    lst, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    ctx = _ctx(tmp_path, mqtt={"host": "127.0.0.1"})
    store = Store(ctx.cfg.db_path)
    store.add_frames(
        [
            {"frame_id": f"{i:032x}", "flight_id": "f1", "source": f"t{i}.png", "status": "classified",
             "label": "undamaged"}
            for i in range(3)
        ]
    )
    store.mark_delivered("mqtt", [f"{0:032x}"])
    store.close()
    ctx.stats.frames_committed = 3
    ctx.stats.engine, ctx.stats.device = "openvino", "CPU"
    ctx.stats.paused_reason = "disk full"
    line = status_line(ctx.stats, {"mqtt": 2})
    assert "3 frames" in line and "backlog mqtt=2" in line and "PAUSED: disk full" in line
    notifier = Notifier(status_interval_s=0.1)
    notifier.start(ctx)
    try:
        got = lst.wait_for("STATUS=3 frames", 5, since=0)
        deadline = time.monotonic() + 5
        while "backlog mqtt=2" not in got and time.monotonic() < deadline:
            time.sleep(0.1)
            got = [ln for ln in lst.lines() if ln.startswith("STATUS=")][-1]
        assert "backlog mqtt=2" in got  # read from the real database
        assert "openvino/CPU" in got
        assert lst.count("WATCHDOG=1") == 0  # no WATCHDOG_USEC: no pings
    finally:
        notifier.stop()


def test_real_agent_speaks_sd_notify(tmp_path, listener, aerial_tiles):
    """`skysift run` under a NOTIFY_SOCKET: READY after start-up, STATUS with the frame count,
    watchdog pings while idle, STOPPING on SIGTERM; `skysift status` sees it running."""
    lst, path = listener
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = tmp_path / "skysift.yaml"
    cfg.write_text(
        "storage: {dir: data}\nsource: {folder: inbox, settle_seconds: 0.2}\nmodel: {devices: [CPU]}\n"
    )
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="2000000")
    env.pop("WATCHDOG_PID", None)
    exe = shutil.which("skysift", path=str(Path(sys.executable).parent)) or "skysift"
    proc = subprocess.Popen([exe, "-c", str(cfg), "run"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        lst.wait_for("READY=1", 120)
        for p in aerial_tiles["damaged"][:2] + aerial_tiles["undamaged"][:2]:
            shutil.copy(p, inbox / p.name)
        lst.wait_for("STATUS=4 frames", 60)
        lst.wait_for("WATCHDOG=1", 10)
        out = subprocess.run(
            [exe, "-c", str(cfg), "status", "--json"], capture_output=True, text=True, timeout=60
        )
        st = json.loads(out.stdout)
        assert st["running"] is True
        assert st["frames"]["total"] == 4
        assert st["engine"]["engine"] in ("openvino", "tensorflow")
        assert len(st["engine"]["model_sha256"] or "") == 64
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=60)
    lst.wait_for("STOPPING=1", 5)
    assert rc == 0, proc.stderr.read()[-2000:]


class FreezableClassifier:
    """The real classifier, with a switch that hangs inference (a stuck GPU driver, a deadlock)."""

    def __init__(self, inner):
        self.inner = inner
        self.frozen = threading.Event()
        self.released = threading.Event()

    def classify(self, images):
        if self.frozen.is_set():
            self.released.wait()
        return self.inner.classify(images)

    def submit(self, images):  # the pipeline's way in
        if self.frozen.is_set():
            self.released.wait()
        return self.inner.submit(images)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_real_pipeline_with_hung_inference_stops_the_pings(tmp_path, listener, monkeypatch, aerial_tiles):
    from agent.service.agent import Agent
    from models.factory import create_frame_classifier

    lst, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = parse_config(
        {
            "storage": {"dir": str(tmp_path / "data")},
            "source": {"folder": str(inbox), "settle_seconds": 0.1},
            "model": {"devices": ["CPU"]},
        }
    )
    clf = FreezableClassifier(create_frame_classifier(cfg.model, tmp_path / "cache"))
    agent = Agent(cfg, classifier=clf, components=[Notifier(status_interval_s=0.2, min_stale_s=1.0)])
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    try:
        lst.wait_for("READY=1", 60)
        tiles = aerial_tiles["damaged"][:2] + aerial_tiles["undamaged"][:2]
        for p in tiles[:2]:
            shutil.copy(p, inbox / p.name)
        lst.wait_for("STATUS=2 frames", 30)
        lst.wait_for("WATCHDOG=1", 10, since=time.monotonic())

        clf.frozen.set()
        for p in tiles[2:]:
            shutil.copy(p, inbox / p.name)
        time.sleep(3.0)  # settle + stale time (1 s) + a tick
        hung = time.monotonic()
        time.sleep(1.5)
        assert lst.count("WATCHDOG=1", since=hung) == 0, lst.lines(hung)

        clf.released.set()
        lst.wait_for("STATUS=4 frames", 30)
        lst.wait_for("WATCHDOG=1", 10, since=time.monotonic())
    finally:
        clf.released.set()
        agent.stop()
        t.join(timeout=60)
    assert not t.is_alive()
    lst.wait_for("STOPPING=1", 5)
