"""The disk budget (``storage.max_gb``): free room by deleting synced images, else pause ingest.

What counts: every file skysift keeps under ``storage.dir`` (the database and its WAL, the
compiled-model cache, state), the images it wrote there (camera frames), and the bytes ingest
has accepted but not yet written (``pending_bytes``). Images in a watched folder belong to the
user and are never counted or deleted.

The pending bytes are why the budget holds. Camera JPEGs are written when their frame is
committed, and up to ``source.queue_size`` frames and three batches are between the source
and the commit: with 180 KB frames and a 10 MB budget, counting only committed frames let the
frames directory reach 206 % of the budget before ingest paused (and 323 % with larger frames).

When the budget is reached, images that are *synced* are deleted, oldest first, until usage
falls to 90 % of the budget (so that deleting does not run at every frame). Synced means every
configured target has it: its row in BigQuery (when BigQuery is configured) and, when the
image is meant for GCS (``sync.upload_images``), the object in GCS. Unsynced data is never
deleted: when only that is left, :func:`check` says to pause, and ingest waits for the link.
A deleted image is recorded as a ``local_image`` delivery in state ``dropped``.

The pipeline calls :func:`check` before accepting frames (cheap: two SQL sums and a stat).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from agent.core.config import Config
from agent.store.db import Store
from agent.store.uploads import DAMAGED_SQL

log = logging.getLogger(__name__)

LOCAL = "local_image"
LOW_WATER = 0.9


@dataclass
class BudgetStatus:
    ok: bool
    reason: str | None
    used_bytes: int
    budget_bytes: int | None
    freed_bytes: int = 0
    deleted: int = 0


def _owned_sql(cfg: Config) -> tuple[str, list[str]]:
    """Frames whose image skysift wrote: ``<storage.dir>/frames/...`` (camera frames), whether
    the path was stored absolute or relative to the working directory."""
    roots = {str(Path(cfg.storage.dir) / "frames"), str(Path(cfg.storage.dir).resolve() / "frames")}
    args = [_like_prefix(r.rstrip("/") + "/") for r in sorted(roots)]
    cond = " OR ".join("f.image_path LIKE ? ESCAPE '\\'" for _ in args)
    return f"({cond})", args


def _like_prefix(root: str) -> str:
    return root.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _synced_sql(cfg: Config) -> str:
    """Condition on frames ``f``: every configured target confirmed this frame."""
    conds = []
    if cfg.sync.bigquery.project:
        conds.append(
            "EXISTS (SELECT 1 FROM deliveries b WHERE b.target = 'bigquery' "
            "AND b.frame_id = f.frame_id AND b.state = 'done')"
        )
    if cfg.sync.gcs.bucket and cfg.sync.upload_images != "none":
        wanted = "f.status = 'classified'" if cfg.sync.upload_images == "all" else DAMAGED_SQL
        conds.append(
            f"(NOT ({wanted}) OR EXISTS (SELECT 1 FROM deliveries g WHERE g.target = 'gcs' "
            "AND g.frame_id = f.frame_id AND g.state IN ('done', 'dropped')))"
        )
    if not conds:
        return "0"  # no cloud configured: nothing is ever synced, nothing is deleted
    return " AND ".join(conds)


class PendingBytes:
    """Bytes ingest has accepted and not yet written (camera JPEGs on their way to the commit).

    The source adds a frame's bytes before it asks :func:`check` (so the frame itself counts)
    and takes them back when the frame is dropped or its file is written. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = 0

    def add(self, n: int) -> None:
        with self._lock:
            self._bytes += n

    @property
    def value(self) -> int:
        with self._lock:
            return self._bytes


def _db_bytes(cfg: Config) -> int:
    """The database with its WAL and shared-memory files, and everything else skysift keeps
    under ``storage.dir`` but its frames (OpenVINO's cache, state): a few files, so walked."""
    db = [Path(f"{cfg.db_path}{suffix}") for suffix in ("", "-wal", "-shm")]
    total = sum(p.stat().st_size for p in db if p.exists())
    root = Path(cfg.storage.dir)
    # camera frames are counted from the database; a watched folder inside is the user's
    skip = {root / "frames", *([Path(cfg.source.folder)] if cfg.source.folder else [])}
    counted = set(db)
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if Path(d, x) not in skip]
        for f in files:
            p = Path(d, f)
            if p not in counted:
                with contextlib.suppress(FileNotFoundError):  # a temporary file gone meanwhile
                    total += p.stat().st_size
    return total


def _live_images(store: Store, cfg: Config, extra: str = "") -> str:
    owned, _ = _owned_sql(cfg)
    return (
        f"FROM frames f WHERE {owned} AND NOT EXISTS (SELECT 1 FROM deliveries l WHERE "
        f"l.target = '{LOCAL}' AND l.frame_id = f.frame_id){extra}"
    )


def usage(store: Store, cfg: Config) -> int:
    """Bytes counted against the budget: database + skysift-owned images still on disk."""
    _, args = _owned_sql(cfg)
    q = f"SELECT COALESCE(SUM(f.bytes), 0) {_live_images(store, cfg)}"
    return _db_bytes(cfg) + int(store.db.execute(q, args).fetchone()[0])


def check(store: Store, cfg: Config, pending_bytes: int = 0) -> BudgetStatus:
    """Enforce ``storage.max_gb`` and ``storage.min_free_mb``; say whether ingest may go on.

    ``pending_bytes`` (see :class:`PendingBytes`): accepted, not yet written, counted as used;
    include the frame about to be accepted, so that accepting it never overruns the budget.
    Returns ``ok=False`` with a human ``reason`` when ingest must pause: the budget (or the
    disk) is full and only unsynced data is left. Safe to call from any thread with its Store.
    """
    budget = int(cfg.storage.max_gb * 1024**3) if cfg.storage.max_gb else None
    used = usage(store, cfg) + pending_bytes if budget else 0
    status = BudgetStatus(True, None, used, budget)
    free_needed = 0
    if budget is not None and used >= budget:
        free_needed = used - int(budget * LOW_WATER)
    disk_short = _disk_short(cfg)
    free_needed = max(free_needed, disk_short)
    if free_needed > 0:
        status.freed_bytes, status.deleted = _delete_synced(store, cfg, free_needed)
        status.used_bytes = used - status.freed_bytes
    if budget is not None and status.used_bytes >= budget:
        status.ok = False
        status.reason = (
            f"storage budget reached ({status.used_bytes / 1024**3:.2f} of "
            f"{cfg.storage.max_gb:g} GB) and only unsynced data is left: waiting for sync"
        )
    elif _disk_short(cfg) > 0:
        status.ok = False
        status.reason = (
            f"less than {cfg.storage.min_free_mb:g} MB free on the disk of {cfg.storage.dir} "
            "and only unsynced data is left: waiting for sync"
        )
    return status


def _disk_short(cfg: Config) -> int:
    d = Path(cfg.storage.dir)
    while not d.exists() and d != d.parent:
        d = d.parent
    free = shutil.disk_usage(d).free
    return max(0, int(cfg.storage.min_free_mb * 1024**2) - free)


def _delete_synced(store: Store, cfg: Config, need: int) -> tuple[int, int]:
    """Delete synced skysift-owned images, oldest first, until ``need`` bytes are freed."""
    _, args = _owned_sql(cfg)
    q = (
        f"SELECT f.frame_id, f.image_path, f.bytes "
        f"{_live_images(store, cfg, ' AND ' + _synced_sql(cfg))} ORDER BY f.rowid"
    )
    freed = deleted = 0
    for frame_id, path, size in store.db.execute(q, args).fetchall():
        if freed >= need:
            break
        try:
            Path(path).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("budget: cannot delete %s: %s", path, exc)
            continue
        # Recorded so the image is no longer counted, and so nobody looks for it again.
        store.mark_dropped(LOCAL, [frame_id], "deleted by the disk budget after sync")
        freed += int(size or 0)
        deleted += 1
    if deleted:
        log.info("budget: deleted %d synced images (%.1f MB)", deleted, freed / 1024**2)
    return freed, deleted
