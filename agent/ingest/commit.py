"""The committer: a classified batch becomes rows, committed in ONE transaction.

A result exists once it is committed: a crash before that leaves the file unrecorded, and it
is simply found again on restart. Camera frames have no file of their own until their JPEG is
saved here, just before the commit. A commit that fails is retried with backoff; on a full
disk (ENOSPC, "database or disk is full": SQLite rolls the transaction back) ingest pauses
until it fits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from agent.core.backoff import Backoff
from agent.core.errors import StorageFull
from agent.core.runtime import AgentContext
from agent.imaging.geotag import PositionSource
from agent.ingest.flights import FlightTracker
from agent.ingest.job import Counts, Job, PipelineError
from agent.ingest.reader import InFlight, record_files
from agent.ingest.rows import build_row
from agent.ingest.space import SpaceGuard
from agent.store.db import Store, is_disk_full, utcnow

log = logging.getLogger(__name__)

#: consecutive commit failures (other than a full disk, which waits) before the pipeline stops
MAX_COMMIT_FAILURES = 10

Flights = dict[str, tuple[str, str]]  # flight_id -> (name, source) of the flights in a batch
Saves = list[tuple[Path, bytes]]  # camera JPEGs to write before the commit


class Committer:
    """Commits batches for one pipeline and publishes ``frames_committed`` and ``progress``."""

    def __init__(
        self,
        ctx: AgentContext,
        flights: FlightTracker,
        space: SpaceGuard,
        inflight: InFlight,
        counts: Counts,
        *,
        positions: list[PositionSource] | None = None,
    ):
        self.ctx = ctx
        self.flights = flights
        self.space = space
        self.inflight = inflight
        self.counts = counts
        self.positions = list(positions or [])
        self.db_path = ctx.cfg.db_path
        self.frames_dir = ctx.cfg.storage.dir / "frames"

    def process(self, store: Store, batch: list[Job]) -> list[dict[str, Any]]:
        """Commit ``batch``; return the rows that were new (committed by this call)."""
        t0 = time.perf_counter()
        rows, flights, saves = self._rows(batch)
        self.counts.timings["geotag"] += time.perf_counter() - t0
        t1 = time.perf_counter()
        inserted = self._commit(store, rows, flights, saves)
        self.inflight.release(batch)
        self.space.release(job.frame for job in batch)  # saved, or left for the source to redo
        if inserted is not None:
            copies = [c for job in batch for c in job.copies]
            try:
                record_files(store, batch + copies)
            except (OSError, sqlite3.Error) as exc:  # only a cache: the frames are committed
                log.warning("could not record file versions: %s", exc)
        self.counts.timings["commit"] += time.perf_counter() - t1
        self.counts.handled += len(batch)
        if inserted is None:
            return []
        new = set(inserted)
        committed = [r for r in rows if r["frame_id"] in new]
        self._count(committed)
        messages = {j.frame_id: j.reject.message for j in batch if j.reject}
        for r in committed:
            if r["status"] == "rejected":
                log.warning("rejected %s: %s (%s)", r["source"], r["reason"], messages.get(r["frame_id"], ""))
        if committed:
            self.ctx.bus.publish("frames_committed", rows=committed)
        self.ctx.bus.publish("progress", count=self.ctx.stats.frames_committed)
        return committed

    def _rows(self, batch: list[Job]) -> tuple[list[dict[str, Any]], Flights, Saves]:
        rows: list[dict[str, Any]] = []
        flights: Flights = {}
        saves: Saves = []
        now = utcnow()  # one classification time for the batch: its frames are committed together
        positions = self.positions + ([self.ctx.telemetry] if self.ctx.telemetry is not None else [])
        offset = self.ctx.cfg.geotag.clock_offset_s
        for job in batch:
            flight_id, name, fsource = self.flights.resolve(job.frame)
            flights.setdefault(flight_id, (name, fsource))
            row = build_row(
                job, flight_id, now, positions=positions, run_id=self.ctx.run_id, clock_offset_s=offset
            )
            if job.camera and job.data is not None:
                dest = self.frames_dir / flight_id / f"{job.frame_id}.jpg"
                row["image_path"] = str(dest)
                saves.append((dest, job.data))
            rows.append(row)
        return rows, flights, saves

    def _count(self, committed: list[dict[str, Any]]) -> None:
        stats = self.ctx.stats
        stats.frames_committed += len(committed)
        stats.frames_classified += sum(r["status"] == "classified" for r in committed)
        stats.frames_rejected += sum(r["status"] == "rejected" for r in committed)
        stats.frames_damaged += sum(r["label"] == "damaged" for r in committed)
        stats.recent.append((time.monotonic(), len(committed)))
        stats.last_progress_monotonic = time.monotonic()

    def _commit(self, store: Store, rows: list[dict], flights: Flights, saves: Saves) -> list[str] | None:
        """Save camera JPEGs and commit the rows; on a full disk pause and retry until it fits.

        Returns the inserted frame ids, or None when stopped before the commit could happen.
        """
        retry = Backoff(f"commit to {self.db_path}", base_s=1.0, cap_s=30.0)
        while True:
            try:
                for fid, (name, fsource) in flights.items():
                    self.flights.ensure(store, fid, name, fsource)
                for dest, data in saves:
                    write_atomic(dest, data)
                inserted = store.add_frames(rows)
            except (OSError, sqlite3.Error, StorageFull) as exc:
                if is_disk_full(exc, self.db_path.parent):
                    self.space.pause("commit", f"disk full: cannot commit to {self.db_path} ({exc})")
                elif retry.failures + 1 >= MAX_COMMIT_FAILURES:
                    raise PipelineError(f"cannot commit to {self.db_path}: {exc}") from exc
                retry.failure(str(exc))
                if self.ctx.stop.wait(retry.wait_s()):
                    log.error(
                        "stopping with %d frames not committed (%s); folder frames are read "
                        "again on the next start", len(rows), exc,
                    )
                    return None
                continue
            if retry.success():
                self.space.resume("commit")
            return inserted


def write_atomic(dest: Path, data: bytes) -> None:
    """Write via a temporary name so a crash never leaves half a JPEG under the final name."""
    if dest.exists() and dest.stat().st_size == len(data):
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
