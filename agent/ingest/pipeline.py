"""From frames to committed rows: source -> bounded queue -> read/decode -> classify -> commit.

Four named threads; those that touch the database have their own SQLite connection:

- ``ingest-source`` iterates the frame source into a bounded queue. A folder waits when the
  queue is full (it can be rescanned, nothing is lost); a live camera drops the frame and
  counts it (``stats.frames_dropped``), since waiting would only make every frame late.
- ``ingest-decode`` takes a batch, reads and hashes the files, skips content already in the
  database (or already on its way there), and decodes the rest: big files in a small thread
  pool (decoders release the GIL), small ones (tiles) in the thread itself (see ``_map``).
- ``ingest-classify`` runs the model on each batch. It does nothing else, so the inference
  engine is fed the next batch while the previous one is being committed (with commit in the
  same thread the engine sat idle during every commit: skysift bench, tiles).
- ``ingest-commit`` geotags the batch and commits it in ONE transaction, then publishes
  ``frames_committed`` and ``progress``. A result exists once it is committed: a crash before
  that leaves the file unrecorded, and it is simply found again on restart.

Disk full: before taking a frame the free space of ``storage.dir`` is checked against
``storage.min_free_mb``, and a commit failing with ENOSPC / "database or disk is full" is rolled
back by SQLite. Either way ingest pauses (``paused`` event, one log line), the commit is retried
with backoff, and ingest resumes (``resumed``) when space returns.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import queue
import random
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.core.errors import ImageError, SkysiftError, StorageFull
from agent.core.runtime import AgentContext
from agent.imaging.decode import DecodedImage, decode_image
from agent.imaging.geotag import PositionSource, geotag, iso_utc, shift
from agent.store.db import Store, utcnow
from drivers.base import Frame, FrameSource

log = logging.getLogger(__name__)

FreeSpace = Callable[[Path], int]  # bytes free for the file system holding the path


def disk_free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


class PipelineError(SkysiftError):
    """The pipeline cannot go on (the classifier fails on every frame, the database is broken)."""


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, StorageFull):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.Error):
        msg = str(exc).lower()
        return "disk is full" in msg or "disk full" in msg or "no space" in msg
    return False


@dataclass
class Prepared:
    """One frame on its way through the pipeline."""

    frame: Frame
    started: float  # perf_counter when its read began
    frame_id: str = ""
    sha256: str | None = None
    size: int | None = None
    data: bytes | None = None
    image: DecodedImage | None = None
    reject: tuple[str, str] | None = None  # (reason, message)
    read_ms: float = 0.0
    decode_ms: float = 0.0
    extra: dict = field(default_factory=dict)


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
        with self._lock:
            was_open = flight_id in self._open
            self._open.discard(flight_id)
            if self.manual == flight_id:
                self.manual = None
            if self.ctx.stats.current_flight == flight_id:
                # another flight still open (folder subfolders) becomes the current one
                self.ctx.stats.current_flight = self.manual or (sorted(self._open)[-1] if self._open else None)
        store.end_flight(flight_id)
        if was_open:
            log.info("flight %s ended", flight_id)
            self.ctx.bus.publish("flight_ended", flight_id=flight_id)

    def start_manual(self, name: str | None = None) -> str:
        from drivers.folder import flight_id_for

        fid = flight_id_for(name) if name else "flight-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
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
        with self._lock:
            open_ids = sorted(self._open)
        for fid in open_ids:
            self.end(store, fid)


class Pipeline:
    """Runs the three ingest threads for one source and one classifier.

    ``free_space`` is injectable for tests; ``positions`` are the geotag sources tried after
    EXIF (track file, then telemetry).
    """

    #: decoded pixels per batch: large frames make small batches, tiles make large ones.
    #: 6 MP is 8 12-MP frames decoded at 1/4 (their file bytes, ~3.5 MB each, are held until
    #: decoded): with 24 MP the agent peaked at 400-600 MB RSS on 12 MP JPEGs (skysift bench).
    BATCH_PIXELS = 6_000_000
    #: and never more frames than this: what is in flight at SIGTERM must finish in a moment
    MAX_BATCH_FRAMES = 64

    def __init__(
        self,
        ctx: AgentContext,
        source: FrameSource,
        classifier: Any,
        *,
        positions: list[PositionSource] | None = None,
        free_space: FreeSpace | None = None,
        decode_workers: int | None = None,
    ):
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.source = source
        self.classifier = classifier
        self.positions = list(positions or [])
        self.free_space = free_space or disk_free_bytes
        self.db_path = self.cfg.db_path
        self.frames_dir = self.cfg.storage.dir / "frames"
        self.flights = FlightTracker(ctx, self.db_path)
        self.input_px = int(getattr(classifier, "input_px", 128) or 128)
        self.q_in: queue.Queue[Frame] = queue.Queue(maxsize=self.cfg.source.queue_size)
        self.q_mid: queue.Queue[list[Prepared] | None] = queue.Queue(maxsize=1)
        # classified batches on their way to the commit thread, with results by id(Prepared)
        self.q_done: queue.Queue[tuple[list[Prepared], dict[int, Any]] | None] = queue.Queue(maxsize=1)
        workers = decode_workers or min(4, max(2, os.cpu_count() or 2))
        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest-read")
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self.source_done = threading.Event()
        self.backlog = 0  # frames handed over by the source so far
        self.handled = 0  # frames fully dealt with: committed, or skipped as duplicates
        self.duplicates = 0
        self.timings: dict[str, float] = {k: 0.0 for k in ("read", "decode", "classify", "geotag", "commit")}
        # frame_id -> the frame on its way to the database; copies met meanwhile wait on it
        self._inflight: dict[str, Prepared] = {}
        self._inflight_lock = threading.Lock()
        self._paused: set[str] = set()
        self._pause_lock = threading.Lock()
        self._space_ok = threading.Event()
        self._space_ok.set()
        self._last_space_check = 0.0
        # The storage budget of sync/budget.py (deletes synced images to make room) when that
        # module is here and the free-space probe is the real one; else the plain probe below.
        self._budget_check = _load_budget_check() if free_space is None else None
        self._source_store: Store | None = None
        # The first batch is small: its frames' size is not known yet, and 64 camera JPEGs
        # read at once hold ~220 MB of file bytes (and delay the first result by seconds).
        self._frames_cap = 8
        self._threads: list[threading.Thread] = []
        self._stop_seen_at: float | None = None
        ctx.commands["flight_start"] = lambda name=None: self.flights.start_manual(name)
        ctx.commands["flight_end"] = lambda: self.flights.end_manual()

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, once: bool = False) -> None:
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        for name, target in (
            ("ingest-source", lambda: self._run_source(once)),
            ("ingest-decode", self._run_decode),
            ("ingest-classify", self._run_classify),
            ("ingest-commit", self._run_commit),
        ):
            t = threading.Thread(target=self._guard(name, target), name=name, daemon=True)
            self._threads.append(t)
            t.start()

    def _guard(self, name: str, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # the thread's top loop: record, then stop the agent
                log.exception("%s failed", name)
                if self.error is None:
                    self.error = exc
                self.ctx.stop.set()
                if name == "ingest-source":
                    self.source_done.set()
                elif name == "ingest-decode":
                    self._put(self.q_mid, None, force=True)
                elif name == "ingest-classify":
                    self._put(self.q_done, None, force=True)
                else:
                    self.finished.set()

        return run

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the pipeline to drain; True when it has."""
        return self.finished.wait(timeout)

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def _beat(self, loop: str) -> None:
        beat = getattr(self.ctx.stats, "beat", None)
        if beat is not None:
            beat(loop)

    # --- pause / resume --------------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        return not self._space_ok.is_set()

    def _pause(self, key: str, reason: str) -> None:
        with self._pause_lock:
            first = not self._paused
            self._paused.add(key)
            self._space_ok.clear()
        if first:
            log.error("ingest paused: %s", reason)
            self.ctx.stats.paused_reason = reason
            self.ctx.bus.publish("paused", reason=reason)

    def _resume(self, key: str) -> None:
        with self._pause_lock:
            if key not in self._paused:
                return
            self._paused.discard(key)
            last = not self._paused
            if last:
                self._space_ok.set()
        if last:
            log.warning("ingest resumed: there is room again")
            self.ctx.stats.paused_reason = None
            self.ctx.bus.publish("resumed", reason="storage available")

    def _space_status(self) -> tuple[bool, str]:
        """(may ingest go on, why not): the storage budget and the free-space floor."""
        cfg = self.cfg
        if self._budget_check is not None and self._source_store is not None:
            try:
                # Frees room by deleting synced images first; says pause only when just
                # unsynced data is left (sync/budget.py).
                st = self._budget_check(self._source_store, cfg)
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

    def _check_space(self, force: bool = False) -> None:
        """Pause or resume ingest on the space check (at most twice a second unless forced)."""
        now = time.monotonic()
        if not force and now - self._last_space_check < 0.5:
            return
        self._last_space_check = now
        ok, reason = self._space_status()
        if ok:
            self._resume("space")
        else:
            self._pause("space", reason)

    def _wait_for_space(self, stop: threading.Event) -> bool:
        """Block (a lossless source) until ingest may take a frame; False when stopping."""
        self._check_space()
        delay = 0.5
        while not self._space_ok.is_set():
            if stop.wait(delay):
                return False
            delay = min(delay * 2, 10.0)
            self._check_space(force=True)
        return True

    # --- source thread ---------------------------------------------------------------------------
    def _run_source(self, once: bool) -> None:
        stop = self.ctx.stop
        lossy = self.source.lossy
        if self._budget_check is not None:
            self._source_store = Store(self.db_path)
        if hasattr(self.source, "on_tick"):
            self.source.on_tick = lambda: self._beat("source")
        try:
            for frame in self.source.frames(stop, once=once):
                self._beat("source")
                if lossy:
                    self._check_space()
                    if self.paused:  # a live frame cannot wait for the disk
                        self._drop(frame)
                        continue
                    try:
                        self.q_in.put_nowait(frame)
                    except queue.Full:
                        self._drop(frame)
                        continue
                else:
                    if not self._wait_for_space(stop):
                        return
                    while True:
                        try:
                            self.q_in.put(frame, timeout=0.2)
                            break
                        except queue.Full:
                            if stop.is_set():
                                return  # not lost: the folder is rescanned on the next start
                self.backlog += 1
                self.ctx.stats.queue_depth = self.q_in.qsize()
        finally:
            if self._source_store is not None:
                self._source_store.close()
                self._source_store = None
            self.source_done.set()

    def _drop(self, frame: Frame) -> None:
        self.source.dropped += 1
        self.ctx.stats.frames_dropped += 1
        if self.source.dropped == 1 or self.source.dropped % 100 == 0:
            log.warning("pipeline full: %d camera frames dropped so far", self.source.dropped)

    # --- decode thread ---------------------------------------------------------------------------
    def _take_batch(self) -> list[Frame] | None:
        """Up to ``_frames_cap`` frames; None when the source is done and the queue empty."""
        stop = self.ctx.stop
        if stop.is_set() and not self.source.lossy:
            # Stopping: frames still queued from a folder were not started; the folder is
            # rescanned on the next start, so leaving them costs nothing and shortens the stop.
            left = 0
            while True:
                try:
                    self.q_in.get_nowait()
                    left += 1
                except queue.Empty:
                    break
            if left:
                log.info("stopping: %d queued files left for the next start", left)
                self.handled += left
            if self.source_done.is_set() or self._stopped_long_enough():
                return None
        while True:
            try:
                first = self.q_in.get(timeout=0.1)
                break
            except queue.Empty:
                self._beat("decode")
                if self.source_done.is_set() and self.q_in.empty():
                    return None
                if stop.is_set() and self._stopped_long_enough() and self.q_in.empty():
                    # A source stuck in a blocking read must not hold up the shutdown.
                    return None
        batch = [first]
        deadline = time.monotonic() + 0.02
        while len(batch) < self._frames_cap:
            try:
                batch.append(self.q_in.get_nowait())
            except queue.Empty:
                if time.monotonic() >= deadline or self.source_done.is_set():
                    break
                time.sleep(0.002)
        return batch

    def _stopped_long_enough(self) -> bool:
        self._stop_seen_at = self._stop_seen_at or time.monotonic()
        return time.monotonic() - self._stop_seen_at > 2.0

    def _put(self, q: queue.Queue, item: Any, force: bool = False) -> None:
        while True:
            try:
                q.put(item, timeout=0.5)
                return
            except queue.Full:
                if force and self.finished.is_set():
                    return

    def _run_decode(self) -> None:
        store = Store(self.db_path)
        try:
            while True:
                batch = self._take_batch()
                if batch is None:
                    break
                self._beat("decode")
                prepared = self._prepare(store, batch)
                if prepared:
                    self._put(self.q_mid, prepared)
        finally:
            store.close()
            self._put(self.q_mid, None, force=True)

    def _prepare(self, store: Store, batch: list[Frame]) -> list[Prepared]:
        batch = self._skip_recorded_files(store, batch)
        items = self._map(self._read, batch, [f.meta.get("size") for f in batch])
        # Changed while being read (a writer still at it): the source hands it over again once
        # it settles, so it is neither rejected as truncated nor recorded twice.
        keep: list[Prepared] = []
        for p in items:
            if p.extra.get("changed"):
                log.info("%s changed while being read; waiting for it to settle", p.frame.source)
                forget = getattr(self.source, "forget", None)
                if forget is not None:
                    forget(p.frame)
                self.handled += 1
                continue
            keep.append(p)
        ids = [p.frame_id for p in keep]
        known = store.known_frame_ids(ids)
        out: list[Prepared] = []
        recorded: list[Prepared] = []
        with self._inflight_lock:
            for p in keep:
                first = self._inflight.get(p.frame_id)
                if p.frame_id in known or first is not None:
                    log.debug("%s: already recorded as %s", p.frame.source, p.frame_id)
                    self.duplicates += 1
                    self.handled += 1
                    if first is not None:
                        # Remembered as a file once the first copy is committed.
                        first.extra.setdefault("copies", []).append(p)
                    else:
                        recorded.append(p)
                    continue
                self._inflight[p.frame_id] = p
                out.append(p)
        if recorded:
            record_files(store, recorded)
        to_decode = [p for p in out if p.reject is None]
        if to_decode:
            self._map(self._decode, to_decode, [p.size for p in to_decode])
            px = sum(p.image.gray.size for p in to_decode if p.image is not None)
            n = sum(1 for p in to_decode if p.image is not None)
            if n:
                per_frame = max(1, px // n)
                self._frames_cap = max(1, min(self.MAX_BATCH_FRAMES, self.BATCH_PIXELS // per_frame))
        return out

    #: files up to this size on average are read and decoded in the decode thread itself
    INLINE_BYTES = 64 * 1024

    def _map(self, fn: Callable[[Any], Any], items: list, sizes: list[int | None]) -> list:
        """``fn`` over ``items``: in the pool, one task per worker rather than per item (a
        future per 128 px tile cost as much as reading it), or right here for small files.

        Small files (the 14 KB tiles) take ~0.1 ms each to read and decode: handing them to
        other threads costs more in GIL hand-overs than it wins, and the model's own threads
        need the cores (skysift bench, tiles: 1 pool thread ~10 % faster than 2, 3 ~20 %
        slower). Big ones (a 12 MP JPEG takes ~40 ms) need every core.
        """
        n = len(items)
        known = [s for s in sizes if s is not None]
        if n <= 1 or (known and sum(known) <= self.INLINE_BYTES * len(known)):
            return [fn(x) for x in items]
        k = min(self.workers, n)
        bounds = [n * i // k for i in range(k + 1)]
        chunks = [items[bounds[i] : bounds[i + 1]] for i in range(k)]
        out: list = []
        for part in self.pool.map(lambda chunk: [fn(x) for x in chunk], chunks):
            out.extend(part)
        return out

    def _skip_recorded_files(self, store: Store, batch: list[Frame]) -> list[Frame]:
        """Drop files whose exact version (path, size, mtime) is already recorded: a restart
        does not read and hash a whole SD card again."""
        versions = {
            str(f.path): (f.meta["size"], f.meta["mtime_ns"])
            for f in batch
            if f.path is not None and "size" in f.meta
        }
        if not versions:
            return batch
        paths = list(versions)
        known: dict[str, tuple[int, int]] = {}
        for i in range(0, len(paths), 500):
            chunk = paths[i : i + 500]
            q = f"SELECT path, size, mtime_ns FROM files WHERE path IN ({','.join('?' * len(chunk))})"
            known.update((r[0], (r[1], r[2])) for r in store.db.execute(q, chunk))
        out = []
        for f in batch:
            key = str(f.path) if f.path is not None else None
            if key is not None and key in known and known[key] == versions.get(key):
                self.duplicates += 1
                self.handled += 1
                continue
            out.append(f)
        return out

    def _read(self, frame: Frame) -> Prepared:
        t0 = time.perf_counter()
        p = Prepared(frame=frame, started=t0)
        meta = frame.meta
        if meta.get("reject"):
            p.frame_id = meta["frame_id"]
            p.reject = (meta["reject"], meta.get("reject_message", meta["reject"]))
            return p
        if frame.data is not None:
            p.data = frame.data
        else:
            p.data = self._read_file(p)
        if p.data is not None:
            p.sha256 = hashlib.sha256(p.data).hexdigest()
            p.size = len(p.data)
            p.frame_id = p.sha256[:32]
        p.read_ms = (time.perf_counter() - t0) * 1000
        self.timings["read"] += p.read_ms / 1000
        return p

    def _read_file(self, p: Prepared) -> bytes | None:
        path = p.frame.path
        assert path is not None
        max_bytes = int(self.cfg.model.max_file_mb * 1024 * 1024)
        try:
            # One descriptor, fstat before and after the read: a third of the system calls of
            # stat/open/stat, which counted at thousands of tiles a second (skysift bench).
            fd = os.open(path, os.O_RDONLY)
            try:
                st = os.fstat(fd)
                if st.st_size > max_bytes:
                    # Too large to read whole: hash it in chunks so its id is still its content.
                    h = hashlib.sha256()
                    while chunk := os.read(fd, 1 << 20):
                        h.update(chunk)
                    p.sha256 = h.hexdigest()
                    p.frame_id = p.sha256[:32]
                    p.size = st.st_size
                    p.reject = (
                        "file_too_large",
                        f"{st.st_size / 1e6:.1f} MB exceeds model.max_file_mb ({self.cfg.model.max_file_mb:g} MB)",
                    )
                    return None
                data = _read_fd(fd, min(st.st_size, max_bytes) + 1)
                st2 = os.fstat(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                p.extra["changed"] = True  # gone before it was read: nothing to record
                return None
            # No content to derive an id from: the path and version name it instead.
            key = f"unreadable:{path}:{p.frame.meta.get('size')}:{p.frame.meta.get('mtime_ns')}"
            p.frame_id = hashlib.sha256(key.encode()).hexdigest()[:32]
            p.reject = ("unreadable", f"cannot read {path}: {exc.strerror or exc}")
            return None
        expected = (p.frame.meta.get("size"), p.frame.meta.get("mtime_ns"))
        now_sig = (st2.st_size, st2.st_mtime_ns)
        if (st.st_size, st.st_mtime_ns) != now_sig or len(data) != st2.st_size or (
            expected[0] is not None and expected != now_sig
        ):
            p.extra["changed"] = True
            return None
        return data

    def _decode(self, p: Prepared) -> None:
        t0 = time.perf_counter()
        try:
            p.image = decode_image(
                p.data or b"",
                tile_px=self.cfg.model.tile_px,
                input_px=self.input_px,
                max_pixels=self.cfg.model.max_pixels,
                camera_timezone=self.cfg.geotag.camera_timezone,
                sha256=p.sha256,
            )
        except ImageError as exc:
            p.reject = (exc.reason, str(exc))
        except Exception as exc:  # a decoder bug must cost one frame, not the agent
            log.warning("%s: unexpected decoder failure: %r", p.frame.source, exc)
            p.reject = ("corrupt", f"decoder failure: {exc!r}")
        if not p.frame.meta.get("camera"):
            p.data = None  # the camera JPEG is still to be saved; file bytes are done with
        p.decode_ms = (time.perf_counter() - t0) * 1000
        self.timings["decode"] += p.decode_ms / 1000

    # --- classify thread -------------------------------------------------------------------------
    def _run_classify(self) -> None:
        # One batch in flight while the next is started: see FrameClassifier.submit.
        last_beat = 0.0
        pending: tuple[list[Prepared], list[Prepared], Any] | None = None
        try:
            while True:
                try:
                    batch = self.q_mid.get_nowait() if pending else self.q_mid.get(timeout=1.0)
                except queue.Empty:
                    batch = []
                if batch is None:
                    break
                started = self._classify_start(batch) if batch else None
                if pending is not None:
                    self._classify_finish(*pending)
                pending = started
                now = time.monotonic()
                if now - last_beat >= 5.0 or batch:
                    self._beat("classify")  # also when idle: see the commit loop
                    last_beat = now
            if pending is not None:
                self._classify_finish(*pending)
        finally:
            self._put(self.q_done, None, force=True)

    def _classify_start(self, batch: list[Prepared]) -> tuple[list[Prepared], list[Prepared], Any]:
        ok = [p for p in batch if p.reject is None and p.image is not None]
        handle: Any = None
        submit = getattr(self.classifier, "submit", None)
        if ok and submit is not None:
            t0 = time.perf_counter()
            try:
                handle = submit([p.image for p in ok])
            except Exception as exc:  # retried in _classify_finish, one frame at a time
                handle = exc
            self.timings["classify"] += time.perf_counter() - t0
        return batch, ok, handle

    def _classify_finish(self, batch: list[Prepared], ok: list[Prepared], handle: Any) -> None:
        results = dict(zip((id(p) for p in ok), self._classify(ok, handle), strict=True))
        self._put(self.q_done, (batch, results))

    # --- commit thread ---------------------------------------------------------------------------
    def _run_commit(self) -> None:
        store = Store(self.db_path)
        last_beat = 0.0
        try:
            while True:
                try:
                    item = self.q_done.get(timeout=1.0)
                except queue.Empty:
                    item = ([], {})
                now = time.monotonic()
                if item is None:
                    break
                batch, results = item
                if batch:
                    self._process(store, batch, results)
                if now - last_beat >= 5.0 or batch:
                    # Also when idle: the watchdog reads it as "the pipeline is alive".
                    self._beat("commit")
                    if not batch:
                        self.ctx.bus.publish("progress", count=self.ctx.stats.frames_committed)
                    last_beat = now
        finally:
            store.close()
            self.finished.set()

    def _classify(self, ok: list[Prepared], handle: Any = None) -> list[Any]:
        """Results for ``ok`` (collected from ``handle`` when it was submitted); a batch that
        fails is retried one frame at a time, so one bad frame costs only itself."""
        images = [p.image for p in ok]
        if not images:
            return []
        t0 = time.perf_counter()
        try:
            if isinstance(handle, Exception):
                raise handle
            if handle is not None:
                return list(self.classifier.collect(handle))
            return list(self.classifier.classify(images))
        except Exception:
            log.exception("classifying a batch of %d frames failed; retrying one by one", len(images))
        finally:
            self.timings["classify"] += time.perf_counter() - t0
        results: list[Any] = []
        for img in images:
            try:
                results.append(self.classifier.classify([img])[0])
            except Exception as exc:
                results.append(exc)
        if all(isinstance(r, Exception) for r in results):
            raise PipelineError(f"the classifier fails on every frame: {results[0]!r}")
        return results

    def _process(self, store: Store, batch: list[Prepared], results: dict[int, Any]) -> None:
        t0 = time.perf_counter()
        rows: list[dict] = []
        messages: dict[str, str] = {}  # frame_id -> why it was rejected, for the log
        flights: dict[str, tuple[str, str]] = {}
        saves: list[tuple[Path, bytes]] = []
        now = utcnow()  # one classification time for the batch: its frames are committed together
        for p in batch:
            flight_id, name, fsource = self.flights.resolve(p.frame)
            flights.setdefault(flight_id, (name, fsource))
            res = results.get(id(p))
            if isinstance(res, Exception):
                p.reject = ("inference_error", str(res))
                res = None
            row = self._row(p, res, flight_id, now)
            if p.reject:
                messages[p.frame_id] = p.reject[1]
            if p.frame.meta.get("camera") and p.data is not None:
                dest = self.frames_dir / flight_id / f"{p.frame_id}.jpg"
                row["image_path"] = str(dest)
                saves.append((dest, p.data))
            rows.append(row)
        self.timings["geotag"] += time.perf_counter() - t0
        t1 = time.perf_counter()
        inserted = self._commit(store, rows, flights, saves)
        with self._inflight_lock:
            # After this, no copy is attached to these frames any more.
            for p in batch:
                self._inflight.pop(p.frame_id, None)
        if inserted is not None:
            copies = [c for p in batch for c in p.extra.get("copies", ())]
            try:
                record_files(store, batch + copies)
            except (OSError, sqlite3.Error) as exc:  # only a cache: the frames are committed
                log.warning("could not record file versions: %s", exc)
        self.timings["commit"] += time.perf_counter() - t1
        self.handled += len(batch)
        if inserted is None:
            return
        new = set(inserted)
        committed = [r for r in rows if r["frame_id"] in new]
        stats = self.ctx.stats
        stats.frames_committed += len(committed)
        stats.frames_classified += sum(r["status"] == "classified" for r in committed)
        stats.frames_rejected += sum(r["status"] == "rejected" for r in committed)
        stats.frames_damaged += sum(r.get("label") == "damaged" for r in committed)
        stats.recent.append((time.monotonic(), len(committed)))
        stats.last_progress_monotonic = time.monotonic()
        stats.queue_depth = self.q_in.qsize()
        for r in committed:
            if r["status"] == "rejected":
                log.warning("rejected %s: %s (%s)", r["source"], r["reason"], messages.get(r["frame_id"], ""))
        if committed:
            self.ctx.bus.publish("frames_committed", rows=committed)
        self.ctx.bus.publish("progress", count=stats.frames_committed)

    def _row(self, p: Prepared, res: Any, flight_id: str, now: str) -> dict:
        frame = p.frame
        img = p.image
        exif = img.exif if img is not None else None
        captured = self._captured_at(p)
        lat, lon, alt, geo_source = geotag(exif, captured, self.positions + self._telemetry())
        row: dict[str, Any] = {
            "frame_id": p.frame_id,
            "flight_id": flight_id,
            "source": frame.source,
            "image_path": str(frame.path) if frame.path is not None else None,
            "sha256": p.sha256,
            "bytes": p.size,
            "status": "rejected" if p.reject or res is None else "classified",
            "reason": p.reject[0] if p.reject else None,
            "label": None,
            "p_damaged": None,
            "tiles": None,
            "damaged_tiles": None,
            "tile_px": None,
            "tile_grid": None,
            "width": img.width if img is not None else None,
            "height": img.height if img is not None else None,
            "lat": lat,
            "lon": lon,
            "alt": alt,
            "geo_source": geo_source,
            "captured_at": captured,
            "classified_at": now,
            "engine": None,
            "device": None,
            "precision": None,
            "inference_ms": None,
            "total_ms": round((time.perf_counter() - p.started) * 1000, 3),
            "run_id": self.ctx.run_id,
        }
        if res is not None and not p.reject:
            row.update(
                label=res.label,
                p_damaged=float(res.p_damaged),
                tiles=int(res.tiles),
                damaged_tiles=int(res.damaged_tiles),
                tile_px=int(res.tile_px),
                tile_grid=[[round(float(v), 5) for v in r] for r in res.grid],
                width=int(res.width),
                height=int(res.height),
                engine=res.engine,
                device=res.device,
                precision=res.precision,
                inference_ms=round(float(res.inference_ms), 3),
            )
        return row

    def _captured_at(self, p: Prepared) -> str | None:
        """EXIF time (camera clock), else the camera grab time, else the file mtime (camera clock)."""
        offset = self.cfg.geotag.clock_offset_s
        exif = p.image.exif if p.image is not None else None
        if exif is not None and exif.captured_at:
            return shift(exif.captured_at, offset)
        if p.frame.captured_at:
            return p.frame.captured_at
        mtime_ns = p.frame.meta.get("mtime_ns")
        if mtime_ns is not None:
            return shift(iso_utc(datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc)), offset)
        return None

    def _telemetry(self) -> list[PositionSource]:
        t = self.ctx.telemetry
        return [t] if t is not None else []

    def _commit(
        self,
        store: Store,
        rows: list[dict],
        flights: dict[str, tuple[str, str]],
        saves: list[tuple[Path, bytes]],
    ) -> list[str] | None:
        """Save camera JPEGs and commit the rows; on a full disk pause and retry until it fits.

        Returns the inserted frame ids, or None when stopped before the commit could happen.
        """
        delay = 1.0
        failures = 0
        while True:
            try:
                for fid, (name, fsource) in flights.items():
                    self.flights.ensure(store, fid, name, fsource)
                for dest, data in saves:
                    _write_atomic(dest, data)
                inserted = store.add_frames(rows)
                if failures:
                    self._resume("commit")
                return inserted
            except (OSError, sqlite3.Error, StorageFull) as exc:
                failures += 1
                if is_disk_full(exc):
                    self._pause("commit", f"disk full: cannot commit to {self.db_path} ({exc})")
                elif failures >= 10:
                    raise PipelineError(f"cannot commit to {self.db_path}: {exc}") from exc
                else:
                    log.warning("commit failed (%s); retrying", exc)
                if self.ctx.stop.wait(delay * (0.5 + random.random() / 2)):
                    log.error(
                        "stopping with %d frames not committed (%s); folder frames are read "
                        "again on the next start", len(rows), exc,
                    )
                    return None
                delay = min(delay * 2, 30.0)


def _load_budget_check() -> Callable[[Store, Any], Any] | None:
    try:
        from agent.store.retention import check
    except ImportError:
        return None
    return check


def record_files(store: Store, items: list[Prepared]) -> None:
    """Remember the file versions whose frames are committed (see migration ``_m3_files``)."""
    now = utcnow()
    rows = [
        (str(p.frame.path), p.frame.meta["size"], p.frame.meta["mtime_ns"], p.frame_id, now)
        for p in items
        if p.frame.path is not None and "size" in p.frame.meta and p.frame_id
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


def _write_atomic(dest: Path, data: bytes) -> None:
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
