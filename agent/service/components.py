"""The optional parts of a running agent, in start order.

``build_components(cfg)`` lists what this configuration needs. Each part adds itself here, is
built only when configured, and is skipped (with a log line) while its module does not exist in
this checkout. The agent starts them in list order after the classifier is compiled and the
source is open, and stops them in reverse: the status file and the systemd notifier come first
so they report the start-up of the others and are the last to stop; the sync loop comes last
so it is the first to stop.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from agent.core.config import Config
from agent.core.runtime import Component

log = logging.getLogger(__name__)


def _load(module: str, name: str) -> Any | None:
    """The class ``name`` of ``module``, or None when that module is not here yet."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            log.debug("component %s.%s not available in this build", module, name)
            return None
        raise
    return getattr(mod, name)


def build_components(cfg: Config) -> list[Component]:
    components: list[Component] = []

    # --- status state file (<storage.dir>/state.json for `skysift status`): always on -------
    state_file = _load("agent.service.status", "StateFile")
    if state_file is not None:
        components.append(state_file())

    # --- systemd notifier (READY, STATUS, WATCHDOG): a no-op outside systemd -------------------
    notifier = _load("agent.service.sdnotify", "Notifier")
    if notifier is not None:
        components.append(notifier())

    # --- Prometheus metrics endpoint: when metrics.listen is set ------------------------------
    if cfg.metrics.listen:
        metrics = _load("agent.service.metrics", "MetricsServer")
        if metrics is not None:
            components.append(metrics(cfg))

    # --- MQTT publisher (live feed, telemetry, commands): when mqtt.host is set ---------------
    if cfg.mqtt.host:
        mqtt = _load("agent.live.mqtt", "MqttPublisher")
        if mqtt is not None:
            components.append(mqtt(cfg))

    # --- sync loop (GCS + BigQuery): sync.loop.build returns None when no target is set -------
    build_sync = _load("sync.loop", "build")
    if build_sync is not None:
        sync_loop = build_sync(cfg)
        if sync_loop is not None:
            components.append(sync_loop)

    return components
