"""What the running agent shares with its components: config, event bus, counters, commands.

Components (sync loop, MQTT publisher, metrics endpoint, systemd notifier) implement
:class:`Component`. ``skysift run`` starts them in dependency order after the pipeline is ready
and stops them in reverse.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.core.config import Config
from agent.core.events import EventBus


@dataclass
class MqttState:
    """The broker link as the MQTT publisher last saw it (written by it, shown in state.json)."""

    connected: bool = False
    #: frames whose message the broker has not acknowledged yet
    backlog: int = 0
    in_flight: int = 0
    last_error: str | None = None


@dataclass
class Stats:
    """Counters of this process, read by status, metrics and the watchdog."""

    started_monotonic: float = field(default_factory=time.monotonic)
    frames_committed: int = 0
    frames_classified: int = 0
    frames_rejected: int = 0
    frames_damaged: int = 0
    frames_dropped: int = 0  # lossy sources only
    #: of those, why: "paused" (no room on disk or in the budget), "queue_full" (ingest behind)
    frames_dropped_by: dict[str, int] = field(default_factory=dict)
    engine_fallbacks: int = 0
    last_progress_monotonic: float = field(default_factory=time.monotonic)
    paused_reason: str | None = None
    engine: str | None = None
    device: str | None = None
    precision: str | None = None
    current_flight: str | None = None
    queue_depth: int = 0
    #: ingest queue name -> items waiting in it (written by the pipeline, read by metrics)
    queue_depths: dict[str, int] = field(default_factory=dict)
    #: the model the classifier runs (written at start by the agent, read by status)
    model: str | None = None
    model_sha256: str | None = None
    recent: deque = field(default_factory=lambda: deque(maxlen=600))  # (monotonic, n) pairs
    #: sync target label -> items pending after the sync loop's last cycle (read by state.json);
    #: replaced whole, never mutated, so readers on other threads see one cycle's numbers
    sync_pending: dict[str, int] = field(default_factory=dict)
    #: None while MQTT is off
    mqtt: MqttState | None = None
    #: loop name -> monotonic time of its last turn (see :meth:`beat`)
    heartbeats: dict[str, float] = field(default_factory=dict)

    def beat(self, loop: str) -> None:
        """Record that a pipeline loop (source scan, classifier) is alive and turning.

        The systemd watchdog (agent/sdnotify.py) pings only while frames make progress or, when
        there is nothing to do, while every loop that beats here has beaten recently: a frozen
        thread then stops the pings and systemd restarts the service.
        """
        self.heartbeats[loop] = time.monotonic()

    def fps(self, window_s: float = 60.0) -> float:
        now = time.monotonic()
        n = sum(c for t, c in self.recent if now - t <= window_s)
        span = min(window_s, max(now - self.started_monotonic, 1e-6))
        return n / span


class Component(Protocol):
    name: str

    def start(self, ctx: AgentContext) -> None: ...

    def stop(self) -> None: ...


@dataclass
class AgentContext:
    cfg: Config
    bus: EventBus
    stats: Stats
    stop: threading.Event
    run_id: str | None = None
    #: named actions components may trigger, e.g. "sync_now", "flight_start", "flight_end",
    #: "publish_status". Registered by whoever implements them; see :meth:`command`.
    commands: dict[str, Any] = field(default_factory=dict)
    #: a live position source for geotagging (the MQTT telemetry subscriber registers one)
    telemetry: Any = None

    def command(self, name: str, /, **kwargs: Any) -> Any:
        # name is positional-only: ctx.command("flight_start", name="Sector 7") must work.
        fn = self.commands.get(name)
        if fn is None:
            raise KeyError(name)
        return fn(**kwargs)
