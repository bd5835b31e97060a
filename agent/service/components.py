"""The optional parts of a running agent, in start order, and the extras they need.

``build_components(cfg)`` lists what this configuration needs; each part is built only when
configured. The agent starts them in list order after the classifier is compiled and the
source is open, and stops them in reverse: the status file and the systemd notifier come first
so they report the start-up of the others and are the last to stop; the sync loop comes last
so it is the first to stop.

``require_extras(cfg)`` runs before any of that (``skysift run``, ``skysift config check``): a
feature that is configured but whose optional extra is not installed stops start-up with the
``pip install`` line to fix it, rather than failing on every sync attempt an hour into a flight.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from agent.core.config import Config
from agent.core.errors import MissingExtra
from agent.core.runtime import Component
from agent.service.sdnotify import Notifier
from agent.service.state_file import StateFile


@dataclass(frozen=True)
class Need:
    """A configured feature (``key`` names its config setting) and the modules it imports."""

    key: str
    extra: str
    modules: tuple[str, ...]


def needs(cfg: Config) -> list[Need]:
    """The optional extras this configuration relies on (core dependencies are not listed)."""
    out: list[Need] = []
    if cfg.sync.bigquery.project:
        out.append(Need("sync.bigquery.project", "cloud", ("google.cloud.bigquery",)))
    # Same condition as sync.loop.build_targets: no images to upload, no GCS client needed.
    if cfg.sync.gcs.bucket and cfg.sync.upload_images != "none":
        out.append(Need("sync.gcs.bucket", "cloud", ("google.cloud.storage", "google_crc32c")))
    # engine: auto only falls back to TensorFlow, so it runs without it; tensorflow needs it.
    if cfg.model.engine == "tensorflow":
        out.append(Need("model.engine: tensorflow", "tensorflow", ("tensorflow", "keras")))
    return out


def _importable(module: str) -> bool:
    # find_spec does not run the module itself (``tensorflow`` would cost seconds), only its
    # parent packages, which raise here when they are missing.
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_extras(cfg: Config) -> None:
    """Raise :class:`MissingExtra` naming each configured feature whose extra is missing."""
    problems = []
    for need in needs(cfg):
        missing = [m for m in need.modules if not _importable(m)]
        if missing:
            problems.append(
                f"{need.key} is configured but the [{need.extra}] extra is not installed "
                f"({', '.join(missing)} cannot be imported): pip install 'skysift[{need.extra}]'"
            )
    if problems:
        raise MissingExtra("\n".join(problems))


def build_components(cfg: Config) -> list[Component]:
    """The components of this configuration, in start order."""
    # Always on: the status state file (<storage.dir>/state.json for `skysift status`) and the
    # systemd notifier (READY, STATUS, WATCHDOG), a no-op outside systemd.
    components: list[Component] = [StateFile(), Notifier()]
    # The rest import their libraries (prometheus_client, paho, pytak, the sync targets) only when
    # configured, so `skysift config check` stays quick.
    if cfg.metrics.listen:
        from agent.service.metrics import MetricsServer

        components.append(MetricsServer(cfg))
    if cfg.mqtt.host:
        from agent.live.mqtt import MqttPublisher

        components.append(MqttPublisher(cfg))
    if cfg.tak.enabled:
        from agent.live.tak import TakSender

        components.append(TakSender(cfg))
    from sync.loop import build as build_sync

    sync_loop = build_sync(cfg)  # None when no sync target is configured
    if sync_loop is not None:
        components.append(sync_loop)
    return components
