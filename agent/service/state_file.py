"""The running agent's side of `skysift status`: ``<storage.dir>/state.json``.

What only the running process knows (is it alive, frames per second right now, queue depth,
links up or down, pause reason, the model it runs) :class:`StateFile` writes every few seconds,
atomically (write a temp file, then rename), so that a reader never sees half a file and
`skysift status` (:mod:`agent.service.status`) works from any shell while the service runs,
without talking to the process. A full disk is logged once (then rate-limited reminders and one
"recovered" line), never a traceback every few seconds, and leaves no temp file behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.logutil import LinkLog

if TYPE_CHECKING:
    from agent.core.config import Config
    from agent.core.runtime import AgentContext

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_INTERVAL_S = 2.0


def state_path(cfg: Config) -> Path:
    return cfg.storage.dir / STATE_FILE


def iso(ts: float) -> str:
    """A Unix time as ISO 8601 UTC, to the second."""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class StateFile:
    """Component: keeps ``<storage.dir>/state.json`` up to date while the agent runs."""

    name = "state_file"

    def __init__(self, interval_s: float = STATE_INTERVAL_S):
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx: AgentContext | None = None
        self._lock = threading.Lock()
        self._links: dict[str, dict[str, Any]] = {}
        self._fallbacks: list[dict[str, Any]] = []
        self.started_at = time.time()
        # Used by start(), then the loop thread, then stop(): one at a time, as LinkLog needs.
        self._write_log = LinkLog(log, f"writing {STATE_FILE}")

    def start(self, ctx: AgentContext) -> None:
        self._ctx = ctx
        ctx.bus.subscribe("sync_state", self._on_sync_state)
        ctx.bus.subscribe("engine_fallback", self._on_fallback)
        self.write()
        self._thread = threading.Thread(target=self._loop, name="state-file", daemon=True)
        self._thread.start()

    def _on_sync_state(self, target: str, state: str, error: str | None = None, **_: Any) -> None:
        with self._lock:
            prev = self._links.get(target)
            since = prev["since"] if prev and prev["state"] == state else iso(time.time())
            self._links[target] = {"state": state, "error": error, "since": since}

    def _on_fallback(self, **payload: Any) -> None:
        with self._lock:
            self._fallbacks.append({k: str(v) for k, v in payload.items()} | {"at": iso(time.time())})
            del self._fallbacks[:-5]

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.write()
            except OSError as exc:  # a full or read-only disk: say so once, not every 2 s
                self._write_log.failure(exc)
            except Exception:
                log.exception("cannot write %s; will retry", STATE_FILE)
            else:
                self._write_log.success()

    def snapshot(self) -> dict[str, Any]:
        ctx = self._ctx
        assert ctx is not None
        st = ctx.stats
        now = time.monotonic()
        with self._lock:
            links = {k: dict(v) for k, v in self._links.items()}
            fallbacks = list(self._fallbacks)
        return {
            "pid": os.getpid(),
            "run_id": ctx.run_id,
            "started_at": iso(self.started_at),
            "updated_at": iso(time.time()),
            "updated_unix": time.time(),
            "engine": st.engine,
            "device": st.device,
            "precision": st.precision,
            "model": st.model,
            "model_sha256": st.model_sha256,
            "current_flight": st.current_flight,
            "frames_committed": st.frames_committed,
            "frames_classified": st.frames_classified,
            "frames_rejected": st.frames_rejected,
            "frames_damaged": st.frames_damaged,
            "frames_dropped": st.frames_dropped,
            "frames_dropped_by": dict(st.frames_dropped_by),
            "engine_fallbacks": st.engine_fallbacks,
            "fallbacks": fallbacks,
            "fps_10s": round(st.fps(10.0), 3),
            "fps_60s": round(st.fps(60.0), 3),
            "queue_depth": st.queue_depth,
            "paused_reason": st.paused_reason,
            "last_progress_age_s": round(now - st.last_progress_monotonic, 1),
            "links": links,
            "sync_pending": dict(st.sync_pending),
            "mqtt": None if st.mqtt is None else dataclasses.asdict(st.mqtt),
        }

    def write(self) -> None:
        self._write(self.snapshot())

    def _write(self, snap: dict[str, Any]) -> None:
        path = state_path(self._ctx.cfg)  # type: ignore[union-attr]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(snap, indent=1), encoding="utf-8")
            os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half
        except BaseException:
            # A full disk fails the write after the temp file was created: never leave it behind
            # (an empty or partial file would hold the space the next write needs).
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._ctx is not None:
            try:
                snap = self.snapshot()
                snap["stopped_at"] = snap["updated_at"]
                self._write(snap)
            except OSError as exc:
                log.warning("cannot write the final %s: %s", STATE_FILE, exc)
