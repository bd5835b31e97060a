"""The running agent: model, source, pipeline and components, from start to a clean stop.

Start order: lock the storage directory (a second agent stops here, see
:mod:`agent.store.lock`), open the database (on a full disk: wait for room), record the run,
compile the classifier, open the source, start the pipeline, then start the components of
:func:`agent.service.components.build_components` in list order (they see a ready agent: READY
to systemd means frames can flow). Stop: the pipeline drains what is in flight and commits it,
flights are closed, then MQTT drains (within ``mqtt.drain_s``) and the other components stop in
reverse order (so they still publish and sync
that last work), then the run is closed.

``main`` owns the signals (:func:`install_signal_handlers`): SIGTERM and SIGINT only set the
stop event, and every loop watches it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.core import sysinfo
from agent.core.config import Config
from agent.core.events import EventBus
from agent.core.redact import redact_url
from agent.core.runtime import AgentContext, Component, Stats
from agent.imaging.geotag import PositionSource, TrackFile
from agent.imaging.srt import SrtTracks
from agent.store.db import Store, open_when_room
from agent.store.lock import StorageLock
from drivers.base import FrameSource

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]  # (frames dealt with, frames handed over so far)


def build_source(cfg: Config) -> FrameSource:
    """The frame source the configuration names: a camera, else the watched folder."""
    if cfg.source.camera is not None:
        from drivers.camera import CameraSource

        return CameraSource(
            cfg.source.camera,
            every_n=cfg.source.camera_every_n,
            max_fps=cfg.source.camera_max_fps,
            reopen_max_s=cfg.source.camera_reopen_max_s,
            clock_offset_s=cfg.geotag.clock_offset_s,
        )
    from drivers.folder import FolderSource

    folder = cfg.watch_folder
    assert folder is not None
    if cfg.source.folder is None:
        folder.mkdir(parents=True, exist_ok=True)  # the default ./inbox is ours to create
    return FolderSource(
        folder, settle_seconds=cfg.source.settle_seconds, rescan_seconds=cfg.source.rescan_seconds,
        ignore_extensions=cfg.source.ignore_extensions,
    )


def build_positions(cfg: Config, source: FrameSource) -> list[PositionSource]:
    """The geotag sources tried after EXIF, in order: ``geotag.track``, then (``geotag.srt:
    auto``) the DJI .SRT flight logs ``source`` finds, when it is a folder that finds them."""
    positions: list[PositionSource] = []
    if cfg.geotag.track is not None:
        positions.append(TrackFile(cfg.geotag.track, cfg.geotag.max_gap_s))
    if cfg.geotag.srt == "auto" and hasattr(source, "on_track_file"):
        g = cfg.geotag
        logs = SrtTracks(camera_timezone=g.camera_timezone, clock_offset_s=g.clock_offset_s, max_gap_s=g.max_gap_s)
        source.on_track_file = logs.add
        positions.append(logs)
    return positions


class Agent:
    """``Agent(cfg).run(once)`` returns the process exit code; ``stop()`` asks it to finish.

    ``source``, ``classifier``, ``components`` and ``free_space`` may be given (tests, the
    benchmark); by default they are built from the configuration.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        source: FrameSource | None = None,
        classifier: Any = None,
        components: list[Component] | None = None,
        free_space: Callable[[Path], int] | None = None,
    ):
        self.cfg = cfg
        self.ctx = AgentContext(cfg=cfg, bus=EventBus(), stats=Stats(), stop=threading.Event())
        self._source = source
        self._classifier = classifier
        self._components = components
        self._free_space = free_space
        self.pipeline: Any = None
        self.started: list[Component] = []

    def stop(self) -> None:
        self.ctx.stop.set()

    def run(self, once: bool = False, progress: ProgressFn | None = None) -> int:
        """Run until stopped (or, with ``once``, until the source is done); the exit code.

        Raises :class:`agent.store.lock.StorageLocked` when another process holds the storage
        directory. Stopped while waiting for room on a full disk at start, it returns 0.
        """
        from agent.ingest.pipeline import Pipeline

        cfg, ctx = self.cfg, self.ctx
        opened = self._open_storage()
        if opened is None:
            return 0
        lock, store = opened
        classifier = self._classifier
        source = self._source
        run_id: str | None = None
        code = 0
        try:
            if classifier is None:
                from models.factory import create_frame_classifier

                cache = cfg.model.cache_dir or cfg.storage.dir / "ov-cache"
                classifier = create_frame_classifier(cfg.model, cache, bus=ctx.bus)
            ctx.stats.engine = getattr(classifier, "engine", None)
            ctx.stats.device = getattr(classifier, "device", None)
            ctx.stats.precision = getattr(classifier, "precision", None)
            ctx.stats.model, ctx.stats.model_sha256 = _model_identity(classifier)
            ctx.bus.subscribe("engine_fallback", self._on_fallback)
            run_id = store.start_run(sysinfo.run_row(cfg.device_id, classifier))
            ctx.run_id = run_id
            for fid in store.end_orphan_flights(run_id):
                log.info("flight %s ended: left open by a run that did not stop cleanly", fid)
            if source is None:
                source = build_source(cfg)
            source.open()
            positions = build_positions(cfg, source)
            self.pipeline = Pipeline(ctx, source, classifier, positions=positions, free_space=self._free_space)
            self.pipeline.start(once=once)
            log.info(
                "skysift running: %s %s -> %s (engine %s/%s, run %s)%s",
                source.kind, redact_url(str(getattr(source, "root", getattr(source, "spec", "")))),
                cfg.db_path,
                ctx.stats.engine, ctx.stats.device, run_id, " --once" if once else "",
            )
            components = self._components if self._components is not None else _build_components(cfg)
            for comp in components:
                comp.start(ctx)
                self.started.append(comp)
                log.debug("component %s started", getattr(comp, "name", comp))
            code = self._wait(once, progress)
        finally:
            try:
                code = self._shutdown(store, source, classifier, run_id, code)
            finally:
                lock.release()
        return code

    def _open_storage(self) -> tuple[StorageLock, Store] | None:
        """Lock the storage directory, then open the database; None when stopped first.

        Both come before the model compiles: a second agent on the directory fails at once
        (:class:`~agent.store.lock.StorageLocked`), and on a full disk both wait for room
        (:func:`agent.store.db.open_when_room`) instead of exiting on a disk I/O error.
        """
        cfg, stop = self.cfg, self.ctx.stop
        where = cfg.storage.dir
        lock = open_when_room(StorageLock(where).acquire, stop, where, f"the lock in {where}")
        if lock is None:
            return None
        store = None
        try:
            store = open_when_room(lambda: Store(cfg.db_path), stop, where, str(cfg.db_path))
        finally:
            if store is None:  # stopped while waiting, or the database cannot be opened
                lock.release()
        if store is None:
            return None
        if not lock.pid_written:  # the disk was full when the lock was taken
            lock.write_pid()
        return lock, store

    def _wait(self, once: bool, progress: ProgressFn | None) -> int:
        pipeline, stop = self.pipeline, self.ctx.stop
        announced = False
        while True:
            done = pipeline.join(0.2)
            self._report(progress)
            if pipeline.error is not None:
                return 1
            if done:
                if once or stop.is_set():
                    return 0
                if not announced:
                    log.info("the source has ended; still running (sync, MQTT) until stopped")
                    announced = True
                if stop.wait(0.5):
                    return 0
            elif stop.is_set():
                # Signalled: the pipeline drains what is in flight (its threads watch stop too).
                t0 = time.monotonic()
                while not pipeline.join(0.2):
                    self._report(progress)
                    if time.monotonic() - t0 > 30:
                        log.error("the pipeline did not drain within 30 s; exiting anyway")
                        return 1
                return 1 if pipeline.error is not None else 0

    def _report(self, progress: ProgressFn | None) -> None:
        if progress is None:
            return
        p = self.pipeline
        progress(p.handled, max(p.backlog, getattr(p.source, "discovered", 0)))

    def _shutdown(self, store: Store, source: FrameSource | None, classifier: Any, run_id: str | None, code: int) -> int:
        self.ctx.stop.set()
        # The pipeline drains and the flights are closed *before* the components stop: their
        # own stop events are separate from ctx.stop, so MQTT still publishes the last frames
        # and the final flight summaries, and the sync loop's final push includes the ended
        # flights' rows.
        if self.pipeline is not None:
            if not self.pipeline.join(30):
                log.error("the pipeline did not drain within 30 s")
                code = code or 1
            self.pipeline.close()
            try:
                self.pipeline.flights.end_all(store)
            except Exception:
                log.exception("closing flights failed")
        # MQTT first, then the rest in reverse start order: a slow final sync push must not hold
        # back the final flight summaries and "offline" (systemd's stop timeout may end us).
        for comp in sorted(reversed(self.started), key=lambda c: getattr(c, "name", None) != "mqtt"):
            try:
                comp.stop()
            except Exception:
                log.exception("stopping component %s failed", getattr(comp, "name", comp))
        self.started.clear()
        if source is not None:
            source.close()
        if classifier is not None and self._classifier is None:
            classifier.close()
        if run_id is not None:
            try:
                store.end_run(run_id)
            except Exception:
                log.exception("closing the run failed")
        store.close()
        st = self.ctx.stats
        log.info(
            "stopped: %d frames committed (%d classified, %d damaged, %d rejected), %d duplicates "
            "skipped, %d dropped",
            st.frames_committed, st.frames_classified, st.frames_damaged, st.frames_rejected,
            self.pipeline.duplicates if self.pipeline else 0, st.frames_dropped,
        )
        return code

    def _on_fallback(self, **event: Any) -> None:
        st = self.ctx.stats
        st.engine_fallbacks += 1
        clf = self.pipeline.classifier if self.pipeline else self._classifier
        if clf is not None:
            st.engine = getattr(clf, "engine", st.engine)
            st.device = getattr(clf, "device", st.device)
            st.precision = getattr(clf, "precision", st.precision)


def _model_identity(classifier: Any) -> tuple[str | None, str | None]:
    """Name and sha256 of the model the classifier runs, from its card (the hash is the one
    the ``runs`` row records: the card's, which pins every model file)."""
    from agent.service.status import model_label

    card = getattr(classifier, "card", None)
    return (model_label(card) if card is not None else None), getattr(classifier, "model_sha256", None)


def _build_components(cfg: Config) -> list[Component]:
    from agent.service.components import build_components

    return build_components(cfg)


def install_signal_handlers(agent: Agent) -> None:
    """SIGTERM/SIGINT set the stop event (the agent drains and exits 0); a second one forces."""
    count = 0

    def handler(signum: int, _frame: Any) -> None:
        nonlocal count
        count += 1
        if count > 1:
            log.error("second %s: exiting now, without draining", signal.Signals(signum).name)
            os._exit(130)
        log.info("%s received: finishing the frames in flight", signal.Signals(signum).name)
        agent.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
