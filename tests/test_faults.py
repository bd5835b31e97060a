"""Real faults injected with strace: a fatal commit error never exits 0, and a file that cannot
be read for a while is neither lost nor recorded as done."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install strace)")


def distinct_tiles(inbox: Path, tiles: list[Path], n: int) -> list[Path]:
    """``n`` PNGs with distinct content (one pixel changed), so none is a duplicate of another."""
    inbox.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        img = cv2.imread(str(tiles[i % len(tiles)]), cv2.IMREAD_GRAYSCALE)
        img[0, 0] = (int(img[0, 0]) + 1 + i // len(tiles)) % 256
        dest = inbox / f"t{i:03d}.png"
        assert cv2.imwrite(str(dest), img)
        out.append(dest)
    return out


def write_cfg(tmp_path: Path, inbox: Path, **source) -> Path:
    cfg = tmp_path / "skysift.yaml"
    settings = {
        "source": {"folder": str(inbox), "settle_seconds": 0.1, "rescan_seconds": 0.5, **source},
        "storage": {"dir": str(tmp_path / "data"), "min_free_mb": 0},
        "model": {"devices": ["CPU"], "cache_dir": str(tmp_path / "ov-cache")},
    }
    cfg.write_text(yaml.safe_dump(settings))
    return cfg


def run_once(cfg: Path, strace: list[str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    prefix = [STRACE, "-f", "-qq", "-o", "/dev/null", *strace] if strace else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "agent", "-c", str(cfg), "run", "--once"],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )


def table(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@needs_strace
def test_eio_on_the_wal_exits_nonzero_and_records_only_what_was_committed(tmp_path, aerial_tiles):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_cfg(tmp_path, inbox)
    assert run_once(cfg).returncode == 0  # the database and model cache exist: faults hit frames
    distinct_tiles(inbox, aerial_tiles["damaged"] + aerial_tiles["undamaged"], 60)
    wal = tmp_path / "data" / "skysift.db-wal"
    res = run_once(cfg, ["-e", "trace=write,pwrite64", "-e", "inject=pwrite64:error=EIO:when=20+", "-P", str(wal)])
    assert res.returncode != 0, res.stderr[-3000:]
    assert "cannot commit" in res.stderr
    db = tmp_path / "data" / "skysift.db"
    committed = {r[0] for r in table(db, "SELECT frame_id FROM frames")}
    assert len(committed) < 60  # the fault did hit
    files = table(db, "SELECT path, frame_id FROM files")
    assert all(fid in committed for _, fid in files), [p for p, fid in files if fid not in committed]


@needs_strace
def test_a_file_denied_for_one_run_is_classified_on_the_next(tmp_path, aerial_tiles):
    inbox = tmp_path / "inbox"
    files = distinct_tiles(inbox, aerial_tiles["damaged"], 5)
    victim = files[2]
    cfg = write_cfg(tmp_path, inbox)
    res = run_once(cfg, ["-e", "trace=openat", "-e", "inject=openat:error=EACCES", "-P", str(victim)])
    assert res.returncode == 0, res.stderr[-3000:]
    db = tmp_path / "data" / "skysift.db"
    assert table(db, "SELECT count(*) FROM frames") == [(4,)]
    assert table(db, "SELECT count(*) FROM frames WHERE reason = 'unreadable'") == [(0,)]
    assert str(victim) not in {r[0] for r in table(db, "SELECT path FROM files")}
    res = run_once(cfg)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = table(db, "SELECT status FROM frames WHERE source = ?".replace("?", repr(str(victim))))
    assert rows == [("classified",)]


def test_unreadable_is_rejected_only_after_give_up(tmp_path, caplog):
    from agent.ingest.job import Counts
    from agent.ingest.reader import Reader
    from drivers.base import Frame

    path = tmp_path / "gone-bad.png"
    path.mkdir()  # reading a directory fails with EISDIR, as root too
    frame = Frame(flight_id="f", source=str(path), path=path, meta={"size": 1, "mtime_ns": 1})
    retried: list[float] = []
    reader = Reader(1.0, Counts(), retry=lambda f, delay: retried.append(delay), give_up_s=3600)
    job = reader.read(frame)
    assert job.reject is None and job.frame_id == "" and job.retry_in is not None
    assert reader.drop_changed([job]) == [] and len(retried) == 1
    reader.give_up_s = 0
    job = reader.read(frame)
    assert job.reject is not None and job.reject.reason == "unreadable" and job.frame_id
    assert "giving up on" in caplog.text
