"""Reading and hashing frames, and keeping each content to one row.

A frame's id is its content (the first 32 hex digits of its sha256), so a file copied, renamed
or found again on a restart is the same frame. :class:`Reader` reads and hashes;
:class:`InFlight` holds the frames on their way to the database, so that a copy met meanwhile
waits on its first instead of being classified twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable

from agent.core.backoff import Backoff
from agent.ingest.job import Counts, Job, Reject
from agent.store.db import Store, utcnow
from drivers.base import Frame

log = logging.getLogger(__name__)


class InFlight:
    """frame_id -> the job on its way to the database, shared by the decode and commit threads."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def admit(self, store: Store, jobs: list[Job], counts: Counts) -> list[Job]:
        """The jobs whose content is neither in the database nor already on its way.

        A copy of a frame on its way is attached to it (recorded as a file once the first
        commits); a copy of a committed frame is recorded as a file now.
        """
        known = store.known_frame_ids(j.frame_id for j in jobs)
        fresh: list[Job] = []
        recorded: list[Job] = []
        with self._lock:
            for job in jobs:
                first = self._jobs.get(job.frame_id)
                if job.frame_id in known or first is not None:
                    log.debug("%s: already recorded as %s", job.frame.source, job.frame_id)
                    counts.duplicates += 1
                    counts.handled += 1
                    if first is not None:
                        first.copies.append(job)
                    else:
                        recorded.append(job)
                    continue
                self._jobs[job.frame_id] = job
                fresh.append(job)
        if recorded:
            record_files(store, recorded)
        return fresh

    def release(self, jobs: list[Job]) -> None:
        """After their commit (or its abandon): no copy is attached to these jobs any more."""
        with self._lock:
            for job in jobs:
                self._jobs.pop(job.frame_id, None)


class Reader:
    """Reads a frame's bytes once and derives its id from them.

    ``forget`` is the source's way to hand a file over again (see :meth:`drop_changed`), and
    ``retry`` its way to hand it over after a delay. With ``retry``, a file that cannot be read
    (EIO, or a writer that set mode 600 for a moment) is no frame yet: being unreadable is not a
    property of its content. It is retried with backoff and stored as rejected ``unreadable``
    only after ``give_up_s``; without ``retry`` (one-off readers) it is rejected at once.
    """

    def __init__(
        self,
        max_file_mb: float,
        counts: Counts,
        *,
        forget: Callable[[Frame], None] | None = None,
        retry: Callable[[Frame, float], None] | None = None,
        give_up_s: float = 3600.0,
    ):
        self.max_file_mb = max_file_mb
        self.max_bytes = int(max_file_mb * 1024 * 1024)
        self.counts = counts
        self.forget = forget
        self.retry = retry
        self.give_up_s = give_up_s
        # path -> (monotonic time of its first failed read, its retry backoff); read threads
        self._failing: dict[str, tuple[float, Backoff]] = {}
        self._failing_lock = threading.Lock()

    def read(self, frame: Frame) -> Job:
        """Read and hash ``frame``; a frame that cannot be read comes back with ``reject`` set."""
        t0 = time.perf_counter()
        job = Job(frame=frame, started=t0)
        meta = frame.meta
        if meta.get("reject"):  # refused by the source (a symlink out of the folder)
            job.frame_id = meta["frame_id"]
            job.reject = Reject(meta["reject"], meta.get("reject_message", meta["reject"]))
            return job
        job.data = frame.data if frame.data is not None else self._read_file(job)
        if job.data is not None:
            job.sha256 = hashlib.sha256(job.data).hexdigest()
            job.size = len(job.data)
            job.frame_id = job.sha256[:32]
        job.read_ms = (time.perf_counter() - t0) * 1000
        self.counts.timings["read"] += job.read_ms / 1000
        return job

    def drop_changed(self, jobs: list[Job]) -> list[Job]:
        """The jobs that were read whole. One changed while being read (a writer still at it)
        is handed over again by the source once it settles: neither rejected as truncated nor
        recorded twice."""
        keep: list[Job] = []
        for job in jobs:
            if job.retry_in is not None and self.retry is not None:
                self.retry(job.frame, job.retry_in)
                self.counts.handled += 1
                continue
            if not job.changed:
                keep.append(job)
                continue
            log.info("%s changed while being read; waiting for it to settle", job.frame.source)
            if self.forget is not None:
                self.forget(job.frame)
            self.counts.handled += 1
        return keep

    def skip_recorded(self, store: Store, frames: list[Frame]) -> list[Frame]:
        """Drop files whose exact version (path, size, mtime) is already recorded: a restart
        does not read and hash a whole SD card again."""
        versions = {
            str(f.path): (f.meta["size"], f.meta["mtime_ns"])
            for f in frames
            if f.path is not None and "size" in f.meta
        }
        if not versions:
            return frames
        paths = list(versions)
        known: dict[str, tuple[int, int]] = {}
        for i in range(0, len(paths), 500):
            chunk = paths[i : i + 500]
            q = f"SELECT path, size, mtime_ns FROM files WHERE path IN ({','.join('?' * len(chunk))})"
            known.update((r[0], (r[1], r[2])) for r in store.db.execute(q, chunk))
        out = []
        for f in frames:
            key = str(f.path) if f.path is not None else None
            if key is not None and key in known and known[key] == versions.get(key):
                self.counts.duplicates += 1
                self.counts.handled += 1
                continue
            out.append(f)
        return out

    def _read_file(self, job: Job) -> bytes | None:
        path = job.frame.path
        if path is None:
            raise ValueError(f"{job.frame.source}: a frame without data needs a path")
        try:
            # One descriptor, fstat before and after the read: a third of the system calls of
            # stat/open/stat, which counted at thousands of tiles a second (skysift bench).
            fd = os.open(path, os.O_RDONLY)
            try:
                st = os.fstat(fd)
                if st.st_size > self.max_bytes:
                    self._too_large(job, fd, st.st_size)
                    return None
                data = _read_fd(fd, min(st.st_size, self.max_bytes) + 1)
                st2 = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self._unreadable(job, exc)
            return None
        self._read_ok(str(path))
        expected = (job.frame.meta.get("size"), job.frame.meta.get("mtime_ns"))
        now_sig = (st2.st_size, st2.st_mtime_ns)
        if (st.st_size, st.st_mtime_ns) != now_sig or len(data) != st2.st_size or (
            expected[0] is not None and expected != now_sig
        ):
            job.changed = True
            return None
        return data

    def _too_large(self, job: Job, fd: int, size: int) -> None:
        # Too large to read whole: hash it in chunks so its id is still its content.
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
        job.sha256 = h.hexdigest()
        job.frame_id = job.sha256[:32]
        job.size = size
        job.reject = Reject(
            "file_too_large",
            f"{size / 1e6:.1f} MB exceeds model.max_file_mb ({self.max_file_mb:g} MB)",
        )

    def _unreadable(self, job: Job, exc: OSError) -> None:
        path = job.frame.path
        if not isinstance(exc, FileNotFoundError) and self._retry_later(job, exc):
            return
        job.reject = Reject("unreadable", f"cannot read {path}: {exc.strerror or exc}")
        if isinstance(exc, FileNotFoundError):
            # Gone before it was read: the pipeline records nothing (``changed``); a one-off
            # reader (skysift classify) reports the reject.
            job.changed = True
            return
        # No content to derive an id from: the path and version name it instead.
        key = f"unreadable:{path}:{job.frame.meta.get('size')}:{job.frame.meta.get('mtime_ns')}"
        job.frame_id = hashlib.sha256(key.encode()).hexdigest()[:32]

    def _retry_later(self, job: Job, exc: OSError) -> bool:
        """Schedule another read of ``job``'s file; False once it is time to give up."""
        if self.retry is None:
            return False
        key = str(job.frame.path)
        now = time.monotonic()
        with self._failing_lock:
            since, backoff = self._failing.setdefault(
                key, (now, Backoff(f"reading {key}", base_s=1.0, cap_s=max(1.0, self.give_up_s / 10)))
            )
            if now - since < self.give_up_s:
                backoff.failure(exc.strerror or str(exc))
                job.retry_in = backoff.wait_s()
                return True
            del self._failing[key]
        log.warning(
            "giving up on %s after %.0f s of failed reads: stored as rejected unreadable (%s)",
            key, now - since, exc.strerror or exc,
        )
        return False

    def _read_ok(self, key: str) -> None:
        if self._failing:  # rare: no lock taken on the path every tile goes through
            with self._failing_lock:
                failing = self._failing.pop(key, None)
            if failing is not None:
                failing[1].success()


def record_files(store: Store, jobs: list[Job]) -> None:
    """Remember the file versions whose frames are committed (see migration ``_m3_files``)."""
    now = utcnow()
    rows = [
        (str(j.frame.path), j.frame.meta["size"], j.frame.meta["mtime_ns"], j.frame_id, now)
        for j in jobs
        if j.frame.path is not None and "size" in j.frame.meta and j.frame_id
    ]
    if not rows:
        return
    with store.transaction() as db:
        db.conn.executemany(
            "INSERT OR REPLACE INTO files (path, size, mtime_ns, frame_id, seen_at) VALUES (?, ?, ?, ?, ?)",
            rows,
        )


def _read_fd(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``fd``, in one read for a local file. A file that grows while
    it is read is caught by the caller (its fstat after the read differs)."""
    parts = [os.read(fd, limit)]
    got = len(parts[0])
    while 0 < got < limit - 1:  # a short read (network file systems): go on until EOF
        more = os.read(fd, limit - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return parts[0] if len(parts) == 1 else b"".join(parts)
