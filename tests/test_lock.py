"""One writer per storage directory: a second `skysift run` (or `sync`) exits at once naming
the first agent's PID; readers keep working beside it; kill -9 frees the directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from util import count_frames

from agent.cli.main import main
from agent.store import StorageLock, StorageLocked
from agent.store.lock import LOCK_NAME, holder_pid

ROOT = Path(__file__).resolve().parents[1]


def test_second_lock_names_the_holder_and_is_free_after_release(tmp_path: Path) -> None:
    first = StorageLock(tmp_path / "data").acquire()  # makes the directory, as Store does
    assert holder_pid(tmp_path / "data" / LOCK_NAME) == os.getpid()
    # flock locks belong to the open file, so a second open in this process conflicts too.
    with pytest.raises(StorageLocked, match=f"in use by process {os.getpid()}") as info:
        StorageLock(tmp_path / "data").acquire()
    assert info.value.pid == os.getpid()
    first.release()
    with StorageLock(tmp_path / "data") as again:
        assert again.held


def test_a_stale_pid_in_the_file_does_not_block(tmp_path: Path) -> None:
    # What kill -9 leaves: the file and a dead PID, but no lock (the kernel dropped it).
    (tmp_path / LOCK_NAME).write_text("999999999\n")
    with StorageLock(tmp_path):
        assert holder_pid(tmp_path / LOCK_NAME) == os.getpid()


def test_sync_that_writes_refuses_a_held_directory_and_sync_status_does_not(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    cfg = tmp_path / "skysift.yaml"
    dead = "http://127.0.0.1:9"  # never contacted: the lock is checked first
    cfg.write_text(yaml.safe_dump({
        "storage": {"dir": str(data)},
        "sync": {"gcs": {"bucket": "b", "endpoint": dead}, "bigquery": {"project": "p", "endpoint": dead}},
    }))
    with StorageLock(data):
        for args in (["sync", "--once"], ["sync", "run"]):
            assert main(["-c", str(cfg), *args]) == 1
            assert f"in use by process {os.getpid()}" in capsys.readouterr().err
        assert main(["-c", str(cfg), "sync", "status"]) == 0


def _skysift(cfg: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", "-c", str(cfg), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )


def _wait_running(proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if "skysift running" in log.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"the first agent did not start: {log.read_text()[-3000:]}")


def test_two_agents_on_one_storage_dir(tmp_path: Path, aerial_tiles) -> None:
    inbox = tmp_path / "inbox" / "f1"
    inbox.mkdir(parents=True)
    for t in aerial_tiles["damaged"][:3]:
        shutil.copy(t, inbox)
    cfg = tmp_path / "skysift.yaml"
    cfg.write_text(yaml.safe_dump({
        "source": {"folder": str(inbox.parent), "settle_seconds": 0.2, "rescan_seconds": 0.5},
        "storage": {"dir": str(tmp_path / "data"), "min_free_mb": 0},
        "model": {"devices": ["CPU"], "cache_dir": str(tmp_path / "cache")},
    }))
    db = tmp_path / "data" / "skysift.db"
    log = tmp_path / "first.log"
    with log.open("w") as err:
        first = subprocess.Popen(
            [sys.executable, "-m", "agent", "-c", str(cfg), "run"], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        _wait_running(first, log)
        t0 = time.monotonic()
        second = _skysift(cfg, "run", timeout=60)
        took = time.monotonic() - t0
        assert second.returncode != 0
        assert f"in use by process {first.pid}" in second.stderr, second.stderr
        assert "skysift running" not in second.stderr
        assert took < 30, took  # no model compile: only the interpreter's start-up
        # readers work beside the running agent
        deadline = time.monotonic() + 60
        while count_frames(db) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        status = _skysift(cfg, "status")
        assert status.returncode == 0, status.stderr
        frames = _skysift(cfg, "frames", "--flight", "f1", "--json")
        assert frames.returncode == 0, frames.stderr
        assert frames.stdout.count('"frame_id"') == 3
        assert first.poll() is None  # and the first agent was not disturbed
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    # kill -9 leaves the lock file with a dead PID in it; the kernel dropped the lock itself
    assert holder_pid(tmp_path / "data" / LOCK_NAME) == first.pid
    after = _skysift(cfg, "run", "--once", "--no-progress")
    assert after.returncode == 0, after.stderr
    assert count_frames(db) == 3
