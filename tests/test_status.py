"""`skysift status`: the database plus the running agent's state file."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.core.config import parse_config
from agent.core.events import EventBus
from agent.core.runtime import AgentContext, Stats
from agent.service.state_file import StateFile, state_path
from agent.service.status import collect, format_text, read_state
from agent.store.db import Store

SKYSIFT = Path(sys.executable).with_name("skysift")


def _frame(i: int, flight: str, label: str | None = "undamaged", status: str = "classified") -> dict:
    return {
        "frame_id": f"{i:032x}",
        "flight_id": flight,
        "source": f"{flight}/tile_{i}.png",
        "status": status,
        "label": label,
        "reason": None if status == "classified" else "corrupt",
    }


@pytest.fixture
def cfg_file(tmp_path) -> Path:
    p = tmp_path / "skysift.yaml"
    p.write_text(
        "storage: {dir: data, max_gb: 2}\n"
        "sync:\n  gcs: {bucket: b}\n  bigquery: {project: p}\n  upload_images: damaged\n"
        "mqtt: {host: 127.0.0.1}\n"
    )
    return p


@pytest.fixture
def db(cfg_file) -> Path:
    from agent.core.config import load_config

    cfg = load_config(cfg_file)
    store = Store(cfg.db_path)
    store.start_run({"run_id": "r1", "engine": "openvino", "device": "CPU", "precision": "f32",
                     "model_sha256": "ab" * 32})
    store.ensure_flight("f1", source="folder")
    store.end_flight("f1")
    store.ensure_flight("f2", source="folder")
    store.add_frames([_frame(1, "f1", "damaged"), _frame(2, "f1"), _frame(3, "f2", "damaged"),
                      _frame(4, "f2"), _frame(5, "f2", None, "rejected")])
    store.mark_delivered("bigquery", [f"{i:032x}" for i in (1, 2, 3)])
    store.mark_failed("gcs", [f"{1:032x}"], "503 from storage")
    store.mark_delivered("mqtt", [f"{i:032x}" for i in range(1, 6)])
    (cfg.storage.dir / "frames").mkdir()
    (cfg.storage.dir / "frames" / "x.jpg").write_bytes(b"\0" * 100_000)
    store.close()
    return cfg.db_path


def test_collect_reads_counts_backlog_and_sync_from_the_database(cfg_file, db):
    from agent.core.config import load_config

    s = collect(load_config(cfg_file))
    assert s["running"] is False
    assert s["frames"] == {"total": 5, "classified": 4, "rejected": 1, "damaged": 2}
    assert s["flights"]["count"] == 2 and s["flights"]["open"] == ["f2"]
    # gcs uploads only damaged images: frames 1 (failed) and 3 wait; bigquery waits for 4 and 5.
    assert s["backlog"] == {"gcs": 2, "bigquery": 2, "mqtt": 0}
    assert s["failed_deliveries"] == {"gcs": 1}
    assert set(s["last_sync"]) == {"bigquery", "mqtt"}
    assert s["engine"]["engine"] == "openvino" and s["engine"]["model_sha256"] == "ab" * 32
    assert s["disk"]["used_bytes"] >= 100_000
    assert s["disk"]["budget_bytes"] == 2_000_000_000
    assert s["fps"]["last_60s"] == pytest.approx(5 / 60, abs=0.01)
    text = format_text(s)
    assert "5 total: 4 classified (2 damaged), 1 rejected" in text
    assert "backlog   bigquery 2, gcs 2, mqtt 0" in text
    assert "gcs: last success never (1 failed deliveries" in text
    assert "not running" in text


def test_status_without_a_database(tmp_path):
    cfg = parse_config({"storage": {"dir": str(tmp_path / "nothing")}})
    s = collect(cfg)
    assert s["database_exists"] is False and s["running"] is False
    assert "database  none yet" in format_text(s)


def _ctx(cfg) -> AgentContext:
    return AgentContext(cfg=cfg, bus=EventBus(), stats=Stats(), stop=threading.Event(), run_id="r1")


def test_state_file_is_written_while_running_and_marked_on_stop(cfg_file, db):
    from agent.core.config import load_config

    cfg = load_config(cfg_file)
    ctx = _ctx(cfg)
    ctx.stats.engine, ctx.stats.device, ctx.stats.precision = "openvino", "CPU", "f32"
    ctx.stats.queue_depth = 3
    sf = StateFile(interval_s=0.1)
    sf.start(ctx)
    try:
        ctx.bus.publish("sync_state", target="gcs", state="down", error="connection refused")
        ctx.stats.frames_committed = 42
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            state, running = read_state(cfg)
            if state and state["frames_committed"] == 42 and state["links"]:
                break
            time.sleep(0.05)
        assert running is True and state["pid"] == os.getpid()
        assert state["links"]["gcs"]["state"] == "down"
        assert state["links"]["gcs"]["error"] == "connection refused"
        s = collect(cfg)
        assert s["running"] is True and s["agent"]["queue_depth"] == 3
        text = format_text(s)
        assert "running (pid" in text and "link      gcs down since" in text and "queue 3" in text
    finally:
        sf.stop()
    state, running = read_state(cfg)
    assert running is False and state["stopped_at"]
    assert not list(state_path(cfg).parent.glob(".state.json*"))  # no temp file left behind


def test_a_stale_state_file_from_a_dead_process_is_not_running(tmp_path):
    cfg = parse_config({"storage": {"dir": str(tmp_path)}})
    # The pid of a process that has exited.
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    state_path(cfg).write_text(json.dumps({"pid": p.pid, "updated_unix": time.time()}))
    assert read_state(cfg)[1] is False
    state_path(cfg).write_text(json.dumps({"pid": os.getpid(), "updated_unix": time.time() - 3600}))
    assert read_state(cfg)[1] is False  # ours, but not updated for an hour: hung or gone
    state_path(cfg).write_text("{half a fi")
    assert read_state(cfg) == (None, False)


def test_cli_text_and_json(cfg_file, db):
    res = subprocess.run(
        [str(SKYSIFT), "-c", str(cfg_file), "status", "--json"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["frames"]["total"] == 5 and data["backlog"]["gcs"] == 2
    res = subprocess.run([str(SKYSIFT), "-c", str(cfg_file), "status"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "frames    5 total" in res.stdout
    assert "disk      " in res.stdout and "budget" in res.stdout


def test_unreadable_database_gives_a_clear_error(cfg_file, db, monkeypatch):
    # The service's files are 0600 skysift: a plain user gets an explanation, not a traceback.
    # (Tests run as root, who reads anything, so the access check itself is made to say no.)
    from agent.core.config import load_config
    from agent.service import status

    monkeypatch.setattr(status.os, "access", lambda *_a, **_k: False)
    with pytest.raises(status.StatusError, match="sudo skysift status"):
        status.collect(load_config(cfg_file))


def test_running_agent_writes_the_model_it_runs_to_the_state_file(tmp_path):
    from agent.service.agent import Agent
    from models.card import load_card

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = parse_config({
        "storage": {"dir": str(tmp_path / "data")},
        "source": {"folder": str(inbox)},
        "model": {"devices": ["CPU"], "cache_dir": str(tmp_path / "cache")},
    })
    agent = Agent(cfg, components=[StateFile(interval_s=0.1)])
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 120
        state, running = read_state(cfg)
        while not running and time.monotonic() < deadline:
            assert t.is_alive()
            time.sleep(0.1)
            state, running = read_state(cfg)
        assert running, state
        card = load_card(cfg.model.path)
        assert state["model"] == f"{card.data['name']} v{card.data['version']}"
        assert state["model_sha256"] == card.sha256 and len(card.sha256) == 64
        s = collect(cfg)
        assert s["engine"]["model"] == state["model"]
        assert s["engine"]["model_sha256"] == card.sha256
    finally:
        agent.stop()
        t.join(timeout=60)
    assert not t.is_alive()


def test_state_file_carries_the_sync_and_mqtt_state(cfg_file, db):
    from agent.core.config import load_config
    from agent.core.runtime import MqttState

    cfg = load_config(cfg_file)
    ctx = _ctx(cfg)
    sf = StateFile(interval_s=60)
    sf.start(ctx)
    try:
        assert read_state(cfg)[0]["mqtt"] is None  # MQTT off
        ctx.stats.sync_pending = {"bigquery": 2, "gcs (damaged images)": 1}
        ctx.stats.mqtt = MqttState(connected=False, backlog=3, in_flight=1, last_error="cannot reach the broker")
        sf.write()
        state, running = read_state(cfg)
        assert running and state["sync_pending"] == {"bigquery": 2, "gcs (damaged images)": 1}
        assert state["mqtt"] == {"connected": False, "backlog": 3, "in_flight": 1,
                                 "last_error": "cannot reach the broker"}
    finally:
        sf.stop()


def _fill(path: Path) -> None:
    """Write ``path`` until the file system is full (ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)


def test_state_file_on_a_full_disk_warns_once_leaves_no_temp_file_and_recovers(tmp_path, caplog):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tiny tmpfs (CI runs as root)")
    small = tmp_path / "small"
    small.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    caplog.set_level(logging.INFO, logger="agent.service.state_file")
    cfg = parse_config({"storage": {"dir": str(small)}})
    sf = StateFile(interval_s=0.05)
    try:
        sf.start(_ctx(cfg))
        _fill(small / "filler")
        time.sleep(0.6)  # a dozen turns of the writer on a full disk
        assert not list(small.glob(".state.json*")), "a temp file was left behind"
        records = [r for r in caplog.records if r.name == "agent.service.state_file"]
        warnings = [r for r in records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "No space left" in warnings[0].getMessage(), warnings
        assert not any(r.exc_info for r in records), "a traceback was logged"
        before = json.loads(state_path(cfg).read_text())["updated_unix"]
        (small / "filler").unlink()  # space returns: the next turn writes, with one line
        deadline = time.monotonic() + 5
        while json.loads(state_path(cfg).read_text())["updated_unix"] == before:
            assert time.monotonic() < deadline, "state.json was not written once space returned"
            time.sleep(0.05)
        lines = [r.getMessage() for r in caplog.records if r.name == "agent.service.state_file"]
        assert sum("recovered" in m for m in lines) == 1, lines
    finally:
        sf.stop()
        subprocess.run(["umount", str(small)], check=False)
