"""The MQTT status message: who the agent is, what it runs, what it did and what it still owes.

Published retained on ``<prefix>/<device>/status``; its last will says ``offline``. The backlog
comes from :func:`sync.pending.backlog`, the numbers ``skysift status`` shows too.
"""

from __future__ import annotations

import threading
from typing import Any

from agent.core.config import Config
from agent.core.runtime import AgentContext, MqttState
from agent.live.payloads import versions
from agent.live.telemetry import TelemetryBuffer
from agent.store.db import Store, utcnow
from sync import backlog
from sync.pending import MQTT


class LiveStatus:
    """What the status says. The recording methods may be called from any thread (bus
    handlers); :meth:`build` runs on the publisher thread, which owns the Store."""

    def __init__(self, cfg: Config, ctx: AgentContext, telemetry: TelemetryBuffer | None):
        self.cfg = cfg
        self.ctx = ctx
        self.telemetry = telemetry
        self.versions = versions()  # engines are imported by now (components start last)
        self._lock = threading.Lock()
        # From the flight events, not stats.current_flight: that one is not cleared at the end.
        self._current_flight = ctx.stats.current_flight
        self._paused: str | None = None
        self._links: dict[str, dict[str, Any]] = {}

    @property
    def current_flight(self) -> str | None:
        with self._lock:
            return self._current_flight

    def flight_started(self, flight_id: str) -> None:
        with self._lock:
            self._current_flight = flight_id

    def flight_ended(self, flight_id: str) -> None:
        with self._lock:
            if self._current_flight == flight_id:
                self._current_flight = None

    def paused(self, reason: str | None) -> None:
        """Ingest paused (``reason``) or resumed (None)."""
        with self._lock:
            self._paused = reason

    def link(self, target: str, state: str | None, error: Any) -> None:
        """A link (sync target or the broker) went up or down."""
        with self._lock:
            self._links[target] = {"state": state, "error": None if error is None else str(error)}

    def base(self) -> dict[str, Any]:
        """The part that needs no database (also the first "online" message)."""
        stats = self.ctx.stats
        with self._lock:
            current, paused = self._current_flight, self._paused
        return {
            "state": "online",
            "device_id": self.cfg.device_id,
            "run_id": self.ctx.run_id,
            "versions": self.versions,
            "engine": stats.engine,
            "device": stats.device,
            "precision": stats.precision,
            "current_flight": current,
            "paused": stats.paused_reason or paused,
        }

    def build(self, store: Store, link: MqttState) -> dict[str, Any]:
        """The full status; ``link`` (the broker link without its backlog) goes to the stats."""
        stats = self.ctx.stats
        totals = store.db.execute(
            "SELECT COALESCE(SUM(frames), 0), COALESCE(SUM(damaged), 0), COALESCE(SUM(rejected), 0) FROM flights"
        ).fetchone()
        owed = backlog(self.cfg, store)
        link.backlog = owed[MQTT]
        stats.mqtt = link
        with self._lock:
            links = dict(self._links)
        status = self.base()
        status.update({
            "frames": {"total": totals[0], "damaged": totals[1], "rejected": totals[2],
                       "this_run": stats.frames_committed},
            "backlog": owed,
            "sync": links,
            "telemetry": None if self.telemetry is None else {"fixes": len(self.telemetry)},
            "updated_at": utcnow(),
        })
        return status
