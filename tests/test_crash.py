"""kill -9 during a backfill, then restart: every file has exactly one row, none lost, none doubled."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import yaml
from util import count_frames

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = 3  # distinct copies of each shared tile: 200 tiles -> 600 files


def make_backfill(inbox: Path, tiles: list[Path]) -> set[str]:
    """Distinct PNGs made from the shared tiles (one pixel changed per variant), in 4 flights."""
    ids: set[str] = set()
    for i, t in enumerate(tiles):
        gray = cv2.imread(str(t), cv2.IMREAD_GRAYSCALE)
        for k in range(VARIANTS):
            img = gray.copy()
            img[0, 0] = (int(gray[0, 0]) + 1 + k) % 256
            ok, buf = cv2.imencode(".png", img)
            assert ok
            data = buf.tobytes()
            folder = inbox / f"sortie-{(i * VARIANTS + k) % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{t.stem}-v{k}.png").write_bytes(data)
            ids.add(hashlib.sha256(data).hexdigest()[:32])
    return ids


def _start(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "-c", str(cfg), "run", "--once"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _kill_after(proc: subprocess.Popen, db: Path, more_than: int, timeout: float = 90) -> int:
    """SIGKILL the agent as soon as the database holds more than ``more_than`` frames."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        n = count_frames(db)
        if n > more_than:
            break
        time.sleep(0.005)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    if proc.stderr is not None:
        proc.stderr.close()
    return count_frames(db)


def test_kill_9_during_backfill_then_restart(tmp_path: Path, aerial_tiles) -> None:
    inbox = tmp_path / "inbox"
    tiles = aerial_tiles["damaged"] + aerial_tiles["undamaged"]
    expected = make_backfill(inbox, tiles)
    files = sum(1 for _ in inbox.rglob("*.png"))
    assert files == len(expected) == len(tiles) * VARIANTS
    cfg = tmp_path / "skysift.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "source": {"folder": str(inbox), "settle_seconds": 0, "queue_size": 16},
                "storage": {"dir": str(tmp_path / "data"), "min_free_mb": 0},
                "model": {"devices": ["CPU"], "cache_dir": str(tmp_path / "cache")},
                "log_level": "warning",
            }
        )
    )
    db = tmp_path / "data" / "skysift.db"

    first = _kill_after(_start(cfg), db, more_than=0)
    assert 0 < first < files, f"the kill did not land mid-backfill ({first} of {files})"
    # A second crash, later in the backfill (it may land after the end: then nothing is missing).
    second = _kill_after(_start(cfg), db, more_than=first)
    assert second >= first

    final = _start(cfg)
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err.decode()

    conn = sqlite3.connect(db)
    n, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT frame_id) FROM frames").fetchone()
    ids = {r[0] for r in conn.execute("SELECT frame_id FROM frames")}
    flight_total = conn.execute("SELECT SUM(frames) FROM flights").fetchone()[0]
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    statuses = dict(conn.execute("SELECT status, COUNT(*) FROM frames GROUP BY status").fetchall())
    conn.close()
    assert integrity == "ok"
    assert n == distinct == files  # none lost, none duplicated
    assert ids == expected  # exactly the files' contents
    assert flight_total == files  # flight counters moved in the same transactions as the rows
    assert statuses == {"classified": files}
    assert runs == 3
