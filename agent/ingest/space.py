"""Pausing ingest while there is no room, and resuming it when room returns.

Two things pause it, each under its own key: the space check before a frame is taken (the
storage budget of :func:`agent.store.retention.check`, or the ``storage.min_free_mb`` floor)
and a commit that failed on a full disk. Ingest resumes when every key is cleared; ``paused``
and ``resumed`` are published once per outage.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from agent.core.backoff import Backoff
from agent.core.runtime import AgentContext
from agent.store.db import Store
from agent.store.retention import PendingBytes
from agent.store.retention import check as budget_check
from drivers.base import Frame

log = logging.getLogger(__name__)

FreeSpace = Callable[[Path], int]  # bytes free for the file system holding the path


def disk_free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


class SpaceGuard:
    """The pause state of one pipeline.

    With the real free-space probe the storage budget is enforced (it deletes synced images to
    make room and says pause only when just unsynced data is left); an injected ``free_space``
    (tests) replaces it with the plain ``min_free_mb`` check.
    """

    def __init__(self, ctx: AgentContext, free_space: FreeSpace | None = None):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.free_space = free_space or disk_free_bytes
        self.use_budget = free_space is None
        self._store: Store | None = None  # the checking thread's own connection
        self._paused: set[str] = set()
        self._lock = threading.Lock()
        self._ok = threading.Event()
        self._ok.set()
        self._last_check = 0.0
        # Camera JPEG bytes accepted and not yet written: the budget counts them, or 64 frames
        # in flight overran a 10 MB budget by half (tests/test_budget_holds.py).
        self.unsaved = PendingBytes()

    @property
    def paused(self) -> bool:
        return not self._ok.is_set()

    def open(self) -> None:
        """Open the connection the budget check uses, in the thread that will call :meth:`check`."""
        if self.use_budget:
            self._store = Store(self.cfg.db_path)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def pause(self, key: str, reason: str) -> None:
        with self._lock:
            first = not self._paused
            self._paused.add(key)
            self._ok.clear()
        if first:
            log.error("ingest paused: %s", reason)
            self.ctx.stats.paused_reason = reason
            self.ctx.bus.publish("paused", reason=reason)

    def resume(self, key: str) -> None:
        with self._lock:
            if key not in self._paused:
                return
            self._paused.discard(key)
            last = not self._paused
            if last:
                self._ok.set()
        if last:
            log.warning("ingest resumed: there is room again")
            self.ctx.stats.paused_reason = None
            self.ctx.bus.publish("resumed", reason="storage available")

    def status(self) -> tuple[bool, str]:
        """(may ingest go on, why not): the storage budget and the free-space floor."""
        cfg = self.cfg
        if self._store is not None:
            try:
                st = budget_check(self._store, cfg, pending_bytes=self.unsaved.value)
                return st.ok, st.reason or "storage full"
            except Exception:
                log.exception("storage budget check failed; using the free-space check alone")
        need = cfg.storage.min_free_mb * 1024 * 1024
        if need <= 0:
            return True, ""
        try:
            free = self.free_space(cfg.storage.dir)
        except OSError:
            return True, ""  # cannot tell: the commit will find out
        if free >= need:
            return True, ""
        return False, (
            f"less than storage.min_free_mb ({cfg.storage.min_free_mb:g} MB) free in {cfg.storage.dir}"
        )

    def check(self, force: bool = False) -> None:
        """Pause or resume ingest on the space check (at most twice a second unless forced)."""
        now = time.monotonic()
        if not force and now - self._last_check < 0.5:
            return
        self._last_check = now
        ok, reason = self.status()
        if ok:
            self.resume("space")
        else:
            self.pause("space", reason)

    def wait(self, stop: threading.Event) -> bool:
        """Block (a lossless source) until ingest may take a frame; False when stopping."""
        self.check()
        if self._ok.is_set():
            return True
        retry = Backoff("ingest space check", base_s=0.5, cap_s=10.0)
        while not self._ok.is_set():
            retry.failure(self.ctx.stats.paused_reason or "no room")
            if stop.wait(retry.wait_s()):
                return False
            self.check(force=True)
        retry.success()
        return True

    def reserve(self, frame: Frame) -> int:
        """Count a live frame's bytes as used from now until :meth:`release` (it is saved then)."""
        n = len(frame.data or b"")
        if n:
            frame.meta["pending_bytes"] = n
            self.unsaved.add(n)
        return n

    def release(self, frames: Iterable[Frame]) -> None:
        """The frames' bytes are written (or the frames dropped): no longer pending. Idempotent."""
        n = sum(f.meta.pop("pending_bytes", 0) for f in frames)
        if n:
            self.unsaved.add(-n)
