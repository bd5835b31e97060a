"""Which flight each frame belongs to, and the flights' start and end events."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from agent.core.runtime import AgentContext
from agent.store.db import Store
from drivers.base import Frame
from drivers.folder import flight_id_for

log = logging.getLogger(__name__)


class FlightTracker:
    """Which flight a frame belongs to, and the flights' start and end.

    Folder frames belong to their subfolder's flight and camera frames to the camera's flight,
    unless a flight was started by command (``flight_start``, e.g. from MQTT): camera frames and
    files dropped directly in the folder root then go to that flight until ``flight_end``.
    """

    def __init__(self, ctx: AgentContext, db_path: Path):
        self.ctx = ctx
        self.db_path = db_path
        self.manual: str | None = None
        self._open: set[str] = set()
        self.touched: set[str] = set()
        self._last_frame: dict[str, float] = {}  # flight_id -> monotonic time of its last batch
        self._lock = threading.RLock()

    def resolve(self, frame: Frame) -> tuple[str, str, str]:
        """Return (flight_id, name, source) for ``frame``."""
        with self._lock:
            if self.manual and (frame.meta.get("root_level") or frame.meta.get("camera")):
                return self.manual, self.manual, "command"
        return (
            frame.flight_id,
            frame.meta.get("flight_name", frame.flight_id),
            frame.meta.get("flight_source", frame.source),
        )

    def ensure(self, store: Store, flight_id: str, name: str, source: str) -> None:
        """Create (or reopen) the flight before its first frame is committed in this process."""
        with self._lock:
            self._last_frame[flight_id] = time.monotonic()
            if flight_id in self._open:
                return
            created = store.ensure_flight(flight_id, name=name, source=source)
            if not created:
                row = store.flight(flight_id)
                if row and row.get("ended_at"):
                    store.reopen_flight(flight_id)
                    created = True
            self._open.add(flight_id)
            self.touched.add(flight_id)
            self.ctx.stats.current_flight = flight_id
        if created:
            log.info("flight %s started", flight_id)
            self.ctx.bus.publish("flight_started", flight_id=flight_id)

    def end(self, store: Store, flight_id: str) -> None:
        """End ``flight_id``; the newest flight still open becomes the current one."""
        with self._lock:
            was_open = flight_id in self._open
            self._open.discard(flight_id)
            if self.manual == flight_id:
                self.manual = None
            if self.ctx.stats.current_flight == flight_id:
                # another flight still open (folder subfolders) becomes the current one
                newest = sorted(self._open)[-1] if self._open else None
                self.ctx.stats.current_flight = self.manual or newest
        store.end_flight(flight_id)
        if was_open:
            log.info("flight %s ended", flight_id)
            self.ctx.bus.publish("flight_ended", flight_id=flight_id)

    def end_idle(self, store: Store, idle_s: float) -> None:
        """End the flights without a new frame for ``idle_s`` (0: never), except one started by
        command: a folder flight otherwise stayed open until the agent stopped, and an open
        flight never reaches BigQuery. A file arriving later reopens it (:meth:`ensure`)."""
        if idle_s <= 0:
            return
        cutoff = time.monotonic() - idle_s
        with self._lock:
            idle = [f for f in self._open if f != self.manual and self._last_frame.get(f, cutoff) <= cutoff]
        for fid in sorted(idle):
            log.info("flight %s: no new frames for %.0f s", fid, idle_s)
            self.end(store, fid)

    def start_manual(self, name: str | None = None) -> str:
        """Start a flight by command; frames without a flight of their own go to it."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        fid = flight_id_for(name) if name else f"flight-{stamp}"
        store = Store(self.db_path)
        try:
            if self.manual and self.manual != fid:
                self.end(store, self.manual)
            self.ensure(store, fid, name or fid, "command")
            with self._lock:
                self.manual = fid
        finally:
            store.close()
        return fid

    def end_manual(self) -> str | None:
        """End the flight started by command; None when there is none."""
        with self._lock:
            fid = self.manual
        if fid is None:
            return None
        store = Store(self.db_path)
        try:
            self.end(store, fid)
        finally:
            store.close()
        return fid

    def end_all(self, store: Store) -> None:
        """End every flight this process opened (at shutdown)."""
        with self._lock:
            open_ids = sorted(self._open)
        for fid in open_ids:
            self.end(store, fid)
