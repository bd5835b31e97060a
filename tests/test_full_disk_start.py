"""`skysift run` started on a full disk waits for room (one "paused: disk full" line), then
does its work once space returns, or exits cleanly on SIGTERM. A real full file system: a
1 MiB tmpfs, which needs root to mount (CI runs as root)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from util import count_frames

from agent.store import Store
from agent.store.lock import LOCK_NAME, holder_pid

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a tmpfs to fill needs root (CI runs these as root)"
)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def fill(disk: Path) -> Path:
    """Write a ballast file until the file system refuses another byte."""
    ballast = disk / "ballast"
    with ballast.open("wb", buffering=0) as f:  # unbuffered: the refusal comes from write()
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    assert shutil.disk_usage(disk).free == 0
    return ballast


def start(tmp_path: Path, disk: Path, tiles: list[Path]) -> tuple[subprocess.Popen, Path]:
    inbox = tmp_path / "inbox" / "f1"
    inbox.mkdir(parents=True)
    for t in tiles:
        shutil.copy(t, inbox)
    cfg = tmp_path / "skysift.yaml"
    cfg.write_text(yaml.safe_dump({
        "source": {"folder": str(inbox.parent), "settle_seconds": 0},
        "storage": {"dir": str(disk), "min_free_mb": 0},
        "model": {"devices": ["CPU"], "cache_dir": str(tmp_path / "cache")},
    }))
    log = tmp_path / "agent.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "-c", str(cfg), "run", "--once", "--no-progress"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
        )
    return proc, log


def wait_paused(proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if "paused: disk full" in log.read_text():
            break
        time.sleep(0.1)
    time.sleep(3)
    assert proc.poll() is None, log.read_text()[-3000:]  # still waiting, not dead
    assert log.read_text().count("paused: disk full") == 1, log.read_text()[-3000:]


def test_waits_for_space_then_finishes(tmp_path: Path, tiny_disk: Path, aerial_tiles) -> None:
    # A drone that flew before: the database exists, and opening it needs room for the WAL
    # index, which fails as "disk I/O error" at PRAGMA journal_mode=WAL.
    Store(tiny_disk / "skysift.db").close()
    ballast = fill(tiny_disk)
    proc, log = start(tmp_path, tiny_disk, aerial_tiles["damaged"][:3])
    try:
        wait_paused(proc, log)
        assert count_frames(tiny_disk / "skysift.db") == 0
        ballast.unlink()
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert count_frames(tiny_disk / "skysift.db") == 3
    assert "Traceback" not in log.read_text()
    # the PID did not fit in the lock file at first; it was written once there was room
    assert holder_pid(tiny_disk / LOCK_NAME) == proc.pid


def test_sigterm_while_waiting_exits_cleanly(tmp_path: Path, tiny_disk: Path, aerial_tiles) -> None:
    fill(tiny_disk)  # a first start: no database yet, "database or disk is full"
    proc, log = start(tmp_path, tiny_disk, aerial_tiles["damaged"][:1])
    try:
        wait_paused(proc, log)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "Traceback" not in log.read_text()
