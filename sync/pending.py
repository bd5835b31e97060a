"""What every outbox target still owes: the one place the backlog is counted.

Each sync target is described here by what it owes (:class:`Owed`): its ``deliveries`` target
name, the label reports give it, its priority and the frames it wants. :func:`owed` lists the
targets the configuration turns on; :func:`sync.loop.build_targets` builds one sync target per
entry, and the targets count their backlog through it. Reports ask :func:`per_target` (per sync
target: the sync loop, ``skysift sync status``) or :func:`backlog` (frames per delivery
target: ``skysift status``, MQTT, TAK, metrics, systemd), so no two of them can disagree, e.g. about
which images ``sync.upload_images`` sends.

No cloud library is imported here: counting works where google-cloud-* is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.core.config import Config
from agent.store.db import Store
from agent.store.uploads import DAMAGED_SQL, REST_SQL

#: the ``deliveries.target`` names
FRAME_ROWS = "bigquery"
FLIGHT_ROWS = "bigquery_flights"
IMAGES = "gcs"
#: the MQTT live feed's outbox (agent.live): counted here too, so every report shows one number
MQTT = "mqtt"
#: the CoT damage markers for ATAK (agent.live.tak): an outbox like MQTT's
TAK = "tak"

#: the delivery key of an ended flight's current version: a flight that changes after it was
#: synced (reopened, late frames) is owed again, as a new version
FLIGHT_KEY = "(f.flight_id || '@' || f.ended_at || '#' || f.frames)"
PENDING_FLIGHTS = (
    "FROM flights f WHERE f.ended_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM deliveries d "
    f"WHERE d.target = ? AND d.state = 'done' AND d.frame_id = {FLIGHT_KEY})"
)


@dataclass(frozen=True)
class Owed:
    """One target's share of the outbox: frames not yet delivered to ``target`` that match
    ``where`` (an SQL condition on the frames table aliased ``f``)."""

    target: str
    label: str
    #: lower runs first: rows (small) before damaged images before the other images
    priority: int
    where: str = ""
    #: whether the items are frames (what :func:`backlog` adds up) rather than flights
    frames: bool = True

    @property
    def service(self) -> str:
        """The remote behind the target: ``bigquery`` for both row targets, else the target."""
        return FRAME_ROWS if self.target.startswith(FRAME_ROWS) else self.target

    def count(self, store: Store) -> int:
        """How many items are waiting for this target."""
        return store.count_pending(self.target, where=self.where)


@dataclass(frozen=True)
class OwedFlights(Owed):
    """Ended flights whose current version is not delivered yet."""

    frames: bool = False

    def count(self, store: Store) -> int:
        return store.db.execute(f"SELECT COUNT(*) {PENDING_FLIGHTS}", [self.target]).fetchone()[0]


BIGQUERY_FRAMES = Owed(FRAME_ROWS, "bigquery", priority=0)
BIGQUERY_FLIGHTS = OwedFlights(FLIGHT_ROWS, "bigquery_flights", priority=1)
DAMAGED_IMAGES = Owed(IMAGES, "gcs (damaged images)", priority=2, where=DAMAGED_SQL)
REST_IMAGES = Owed(IMAGES, "gcs (rest images)", priority=3, where=REST_SQL)
MQTT_FRAMES = Owed(MQTT, "mqtt", priority=0)
TAK_FRAMES = Owed(TAK, "tak", priority=0)


def owed(cfg: Config) -> list[Owed]:
    """The sync targets this configuration turns on, in priority order."""
    out: list[Owed] = []
    if cfg.sync.bigquery.project:
        out += [BIGQUERY_FRAMES, BIGQUERY_FLIGHTS]
    if cfg.sync.gcs.bucket and cfg.sync.upload_images != "none":
        out.append(DAMAGED_IMAGES)
        if cfg.sync.upload_images == "all":
            out.append(REST_IMAGES)
    return out


def per_target(cfg: Config, store: Store) -> dict[str, int]:
    """Items waiting per sync target, by label (``bigquery``, ``gcs (damaged images)``...)."""
    return {o.label: o.count(store) for o in owed(cfg)}


def backlog(cfg: Config, store: Store) -> dict[str, int]:
    """Frames not yet delivered, per configured delivery target (``bigquery``, ``gcs``,
    ``mqtt``, ``tak``): what ``skysift status``, the MQTT status, metrics and systemd report."""
    out: dict[str, int] = {}
    for o in owed(cfg):
        if o.frames:
            out[o.target] = out.get(o.target, 0) + o.count(store)
    if cfg.mqtt.host:
        out[MQTT] = MQTT_FRAMES.count(store)
    if cfg.tak.enabled:
        out[TAK] = TAK_FRAMES.count(store)
    return out
