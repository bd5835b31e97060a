"""From frames to committed rows: source -> bounded queue -> read/decode -> classify -> commit.

Four named threads, each the loop of one stage; those that touch the database have their own
SQLite connection:

- ``ingest-source`` (:class:`~agent.ingest.source.SourcePump`) iterates the frame source into a
  bounded queue: a folder waits when it is full, a live camera drops and counts.
- ``ingest-decode`` takes a batch (:class:`~agent.ingest.decoder.BatchSizer`), reads and hashes
  the files, skips content already in the database or on its way there
  (:mod:`agent.ingest.reader`), and decodes the rest (:class:`~agent.ingest.decoder.Decoder`):
  big files in a small thread pool, small ones in the thread itself (:class:`Workers`).
- ``ingest-classify`` (:class:`~agent.ingest.classify.ClassifierStage`) runs the model on each
  batch. It does nothing else, so the inference engine is fed the next batch while the previous
  one is being committed (with commit in the same thread the engine sat idle during every
  commit: skysift bench, tiles).
- ``ingest-commit`` (:class:`~agent.ingest.commit.Committer`) geotags the batch and commits it
  in ONE transaction, then publishes ``frames_committed`` and ``progress``.

Disk full: before taking a frame the space is checked (:class:`~agent.ingest.space.SpaceGuard`),
and a commit failing on a full disk is rolled back by SQLite. Either way ingest pauses
(``paused`` event, one log line), the commit is retried with backoff, and ingest resumes
(``resumed``) when space returns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from agent.core.runtime import AgentContext
from agent.imaging.geotag import PositionSource
from agent.ingest.classify import BatchClassifier, ClassifierStage, Submitted
from agent.ingest.commit import Committer
from agent.ingest.decoder import BatchSizer, Decoder
from agent.ingest.flights import FlightTracker
from agent.ingest.job import Counts, Job
from agent.ingest.locate import Locator
from agent.ingest.reader import InFlight, Reader
from agent.ingest.source import SourcePump
from agent.ingest.space import FreeSpace, SpaceGuard
from agent.ingest.workers import Workers
from agent.store.db import Store
from drivers.base import Frame, FrameSource
from drivers.folder import FolderSource

log = logging.getLogger(__name__)

Batch = list[Job] | None  # None: the end of the stream, passed down to the next thread


class Pipeline:
    """Runs the four ingest threads for one source and one classifier.

    ``free_space`` is injectable for tests; ``positions`` are the geotag sources tried after
    EXIF (track file, then telemetry).
    """

    def __init__(
        self,
        ctx: AgentContext,
        source: FrameSource,
        classifier: BatchClassifier,
        *,
        positions: list[PositionSource] | None = None,
        free_space: FreeSpace | None = None,
        decode_workers: int | None = None,
    ):
        self.ctx = ctx
        self.cfg = cfg = ctx.cfg
        self.source = source
        self.classifier = classifier
        self.db_path = cfg.db_path
        self.counts = Counts()
        self.flights = FlightTracker(ctx, self.db_path)
        self.space = SpaceGuard(ctx, free_space)
        self.q_in: queue.Queue[Frame] = queue.Queue(maxsize=cfg.source.queue_size)
        self.q_mid: queue.Queue[Batch] = queue.Queue(maxsize=1)  # decoded, to classify
        self.q_done: queue.Queue[Batch] = queue.Queue(maxsize=1)  # classified, to commit
        self.workers = Workers(decode_workers)
        folder = source if isinstance(source, FolderSource) else None
        self.reader = Reader(
            cfg.model.max_file_mb, self.counts,
            forget=folder.forget if folder else None,
            retry=folder.retry_later if folder else None,
            give_up_s=cfg.source.unreadable_give_up_s,
        )
        self.inflight = InFlight()
        located_by = list(positions or [])
        locator = Locator(cfg, lambda: located_by + ([ctx.telemetry] if ctx.telemetry else []))
        self.decoder = Decoder(
            cfg.model, classifier.input_px, cfg.geotag.camera_timezone, self.counts, locator
        )
        self.sizer = BatchSizer()
        self.stage = ClassifierStage(classifier, self.counts)
        self.committer = Committer(ctx, self.flights, self.space, self.inflight, self.counts, positions=positions)
        self.pump = SourcePump(ctx, source, self.q_in, self.space, self.counts)
        # Folder flights end when idle; a camera's flight lasts as long as its stream.
        self.idle_s = cfg.source.flight_idle_s if folder else 0.0
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self.source_done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stop_seen_at: float | None = None
        ctx.commands["flight_start"] = lambda name=None: self.flights.start_manual(name)
        ctx.commands["flight_end"] = lambda: self.flights.end_manual()

    # The counters the agent, its progress bar and skysift bench read.
    @property
    def backlog(self) -> int:
        return self.counts.backlog

    @property
    def handled(self) -> int:
        return self.counts.handled

    @property
    def duplicates(self) -> int:
        return self.counts.duplicates

    @property
    def timings(self) -> dict[str, float]:
        return self.counts.timings

    @property
    def paused(self) -> bool:
        return self.space.paused

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, once: bool = False) -> None:
        (self.cfg.storage.dir / "frames").mkdir(parents=True, exist_ok=True)
        for name, target, end in (
            ("ingest-source", lambda: self.pump.run(once), self.source_done.set),
            ("ingest-decode", self._run_decode, lambda: self._put(self.q_mid, None, force=True)),
            ("ingest-classify", self._run_classify, lambda: self._put(self.q_done, None, force=True)),
            ("ingest-commit", self._run_commit, self.finished.set),
        ):
            t = threading.Thread(target=self._guard(name, target, end), name=name, daemon=True)
            self._threads.append(t)
            t.start()

    def _guard(self, name: str, fn: Callable[[], None], end: Callable[[], None]) -> Callable[[], None]:
        """The thread's top loop. ``end`` passes the end of the stream to the next thread; it
        runs only after a failure is recorded, so that whoever sees the pipeline finished also
        sees its error (a ``finally`` in ``fn`` would run first, and the run exited 0)."""

        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # record, then stop the agent
                log.exception("%s failed", name)
                if self.error is None:
                    self.error = exc
                self.ctx.stop.set()
            finally:
                end()

        return run

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the pipeline to drain; True when it has."""
        return self.finished.wait(timeout)

    def close(self) -> None:
        self.workers.close()

    def refresh_queue_depths(self) -> None:
        """Publish the ingest queues' current sizes (frames; batches after decode) in the stats."""
        stats = self.ctx.stats
        stats.queue_depth = self.q_in.qsize()
        stats.queue_depths = {
            "source": stats.queue_depth,
            "decoded": self.q_mid.qsize(),
            "classified": self.q_done.qsize(),
        }

    def _put(self, q: queue.Queue[Batch], item: Batch, force: bool = False) -> None:
        while True:
            try:
                q.put(item, timeout=0.5)
                return
            except queue.Full:
                if force and self.finished.is_set():
                    return

    # --- the thread loops ------------------------------------------------------------------------
    def _run_decode(self) -> None:
        store = Store(self.db_path)
        try:
            while (frames := self._take_batch()) is not None:
                self.ctx.stats.beat("decode")
                jobs = self._prepare(store, frames)
                if jobs:
                    self._put(self.q_mid, jobs)
        finally:
            store.close()

    def _prepare(self, store: Store, frames: list[Frame]) -> list[Job]:
        """Read, de-duplicate and decode one batch; the jobs that go on to the classifier."""
        frames = self.reader.skip_recorded(store, frames)
        jobs = self.workers.map(self.reader.read, frames, [f.meta.get("size") for f in frames])
        admitted = self.inflight.admit(store, self.reader.drop_changed(jobs), self.counts)
        # copies of stored or in-flight content are never saved: their bytes are not pending
        self.space.release(j.frame for j in jobs if j not in admitted)
        jobs = admitted
        to_decode = [j for j in jobs if j.reject is None]
        if to_decode:
            self.workers.map(self.decoder.decode, to_decode, [j.size for j in to_decode])
            self.sizer.update(to_decode)
        return jobs

    def _run_classify(self) -> None:
        # One batch in flight while the next is started: see FrameClassifier.submit.
        last_beat = 0.0
        pending: Submitted | None = None
        while True:
            try:
                batch = self.q_mid.get_nowait() if pending else self.q_mid.get(timeout=1.0)
            except queue.Empty:
                batch = []
            if batch is None:
                break
            started = self.stage.submit(batch) if batch else None
            if pending is not None:
                self._put(self.q_done, self.stage.collect(pending))
            pending = started
            now = time.monotonic()
            if now - last_beat >= 5.0 or batch:
                self.ctx.stats.beat("classify")  # also when idle: see the commit loop
                last_beat = now
        if pending is not None:
            self._put(self.q_done, self.stage.collect(pending))

    def _run_commit(self) -> None:
        store = Store(self.db_path)
        last_beat = 0.0
        try:
            while True:
                try:
                    batch = self.q_done.get(timeout=1.0)
                except queue.Empty:
                    batch = []
                now = time.monotonic()
                if batch is None:
                    break
                if batch:
                    self.committer.process(store, batch)
                if self.idle_s:
                    self.flights.end_idle(store, self.idle_s)
                self.refresh_queue_depths()
                if now - last_beat >= 5.0 or batch:
                    # Also when idle: the watchdog reads it as "the pipeline is alive".
                    self.ctx.stats.beat("commit")
                    if not batch:
                        self.ctx.bus.publish("progress", count=self.ctx.stats.frames_committed)
                    last_beat = now
        finally:
            store.close()

    # --- batches ---------------------------------------------------------------------------------
    def _take_batch(self) -> list[Frame] | None:
        """Up to ``sizer.frames`` frames; None when the source is done and the queue empty."""
        stop = self.ctx.stop
        if stop.is_set() and not self.source.lossy:
            self._leave_queued()
            if self.source_done.is_set() or self._stopped_long_enough():
                return None
        while True:
            try:
                first = self.q_in.get(timeout=0.1)
                break
            except queue.Empty:
                self.ctx.stats.beat("decode")
                if self.source_done.is_set() and self.q_in.empty():
                    return None
                if stop.is_set() and self._stopped_long_enough() and self.q_in.empty():
                    # A source stuck in a blocking read must not hold up the shutdown.
                    return None
        batch = [first]
        deadline = time.monotonic() + 0.02
        while len(batch) < self.sizer.frames:
            try:
                batch.append(self.q_in.get_nowait())
            except queue.Empty:
                if time.monotonic() >= deadline or self.source_done.is_set():
                    break
                time.sleep(0.002)
        return batch

    def _leave_queued(self) -> None:
        # Stopping: frames still queued from a folder were not started; the folder is rescanned
        # on the next start, so leaving them costs nothing and shortens the stop.
        left = 0
        while True:
            try:
                self.q_in.get_nowait()
                left += 1
            except queue.Empty:
                break
        if left:
            log.info("stopping: %d queued files left for the next start", left)
            self.counts.handled += left

    def _stopped_long_enough(self) -> bool:
        self._stop_seen_at = self._stop_seen_at or time.monotonic()
        return time.monotonic() - self._stop_seen_at > 2.0
