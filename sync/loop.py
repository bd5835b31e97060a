"""The sync loop: pushes the outbox to every configured target beside ingest, never blocking it.

:class:`Syncer` does the work (used by the loop thread and by ``skysift sync --once``): it
always serves the highest-priority target that has something pending and is not backing off
(rows, then flight rows, then damaged images, then the other images), a bounded chunk at a
time, so new rows overtake a long image backlog. :class:`SyncLoop` is the agent component:
a named thread that wakes on ``frames_committed`` / ``flight_ended``, on ``sync_now`` and on a
timer (``sync.interval_s``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from agent.core.backoff import Backoff
from agent.core.config import Config
from agent.store.db import Store
from sync.base import SyncError, SyncSetupError, SyncTarget
from sync.pending import BIGQUERY_FRAMES, DAMAGED_IMAGES, Owed, owed
from sync.quota import QUOTA, QuotaPaused, quota_wait_s, rate_wait_s

log = logging.getLogger(__name__)

#: items per push: small enough that rows pending behind an image backlog wait little
IMAGE_CHUNK = 16


def build_targets(cfg: Config, timeout_s: float = 60.0, write_client: Any = None) -> list[SyncTarget]:
    """One target per entry of :func:`sync.pending.owed`, in priority order (imports the
    cloud libraries). BigQuery rows go by load jobs or, with ``sync.bigquery.method:
    write_api``, by the Storage Write API (``write_client``: a BigQueryWriteClient to use,
    e.g. one on an emulator's gRPC port; default: :func:`sync.write_api.write_client`)."""
    clients: dict[str, Any] = {"bigquery_write": write_client}  # one client per service
    return [_target(cfg, o, clients, timeout_s) for o in owed(cfg)]


def _target(cfg: Config, o: Owed, clients: dict[str, Any], timeout_s: float) -> SyncTarget:
    if o.service == "bigquery":
        from sync.clients import bigquery_client

        if o.service not in clients:
            clients[o.service] = bigquery_client(cfg)
        if cfg.sync.bigquery.method == "write_api":
            from sync import write_api

            if clients["bigquery_write"] is None:
                clients["bigquery_write"] = write_api.write_client(cfg)
            cls = write_api.FrameAppends if o == BIGQUERY_FRAMES else write_api.FlightAppends
            return cls(cfg, clients[o.service], clients["bigquery_write"], timeout_s)
        from sync.bigquery import FlightRows, FrameRows

        rows = FrameRows if o == BIGQUERY_FRAMES else FlightRows
        return rows(cfg, clients[o.service], timeout_s)
    from sync.clients import storage_client
    from sync.gcs import GcsImages

    if o.service not in clients:
        clients[o.service] = storage_client(cfg)
    return GcsImages(cfg, "damaged" if o == DAMAGED_IMAGES else "rest", clients[o.service], timeout_s)


def sync_configured(cfg: Config) -> bool:
    return bool(owed(cfg))


@dataclass
class CycleResult:
    pushed: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def all_done(self) -> bool:
        return not any(self.pending.values())


class Syncer:
    """Runs the targets against one Store (so: one thread)."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        targets: list[SyncTarget],
        on_state: Any = None,
        backoff_base_s: float = 1.0,
    ):
        self.cfg = cfg
        self.store = store
        self.targets = targets
        # Targets of one service share one backoff, so an outage is one "link down" line and
        # one "recovered" line per service, not per target.
        self.links = {t.label: t.service for t in targets}
        self.backoffs = {
            link: Backoff(f"sync {link}", base_s=backoff_base_s, cap_s=cfg.sync.backoff_max_s)
            for link in self.links.values()
        }
        self._on_state = on_state
        #: service -> (monotonic end of its quota pause, refusals in a row, the message)
        self.pauses: dict[str, tuple[float, int, str]] = {}

    def _state(self, target: SyncTarget, state: str, error: str | None) -> None:
        if self._on_state:
            self._on_state(target=target.service, state=state, error=error)

    def next_wait(self) -> float | None:
        """Seconds until a backed-off, quota-paused or paced target may try again (None: none
        is waiting)."""
        now = time.monotonic()
        waits = [b.wait_s() for b in self.backoffs.values() if b.down]
        waits += [until - now for until, _, _ in self.pauses.values() if until > now]
        waits += [w for t in self.targets if (w := t.wait_s(self.store)) > 0 and t.pending(self.store)]
        return min(waits) if waits else None

    def cycle(self, stop: threading.Event | None = None, deadline: float | None = None) -> CycleResult:
        """Push until nothing ready is pending, ``stop`` is set or ``deadline`` (monotonic)."""
        result = CycleResult()
        while not (stop and stop.is_set()) and not (deadline and time.monotonic() > deadline):
            target = self._next_target()
            if target is None:
                break
            bo = self.backoffs[target.service]
            limit = self._limit(target)
            try:
                n = target.push(self.store, limit)
            except QuotaPaused as exc:
                result.errors[target.service] = self._pause(target, exc)
                continue
            except SyncError as exc:
                if isinstance(exc, SyncSetupError) and not bo.down:
                    log.error("%s", exc)
                if bo.failure(str(exc)):
                    self._state(target, "down", str(exc))
                result.errors[target.service] = str(exc)
                continue
            except Exception as exc:  # a bug must not kill the loop: log, back off, go on
                log.exception("sync %s failed unexpectedly", target.label)
                if bo.failure(repr(exc)):
                    self._state(target, "down", repr(exc))
                result.errors[target.service] = repr(exc)
                continue
            recovered = bo.success()
            if self._resume(target) or recovered:
                self._state(target, "ok", None)
            result.errors.pop(target.service, None)
            result.pushed[target.label] = result.pushed.get(target.label, 0) + n
            if n == 0:
                break  # pending but nothing movable (should not happen): never spin
        result.pending = self.pending()
        return result

    def _limit(self, target: SyncTarget) -> int:
        if target.service != "bigquery":
            return IMAGE_CHUNK
        bq = self.cfg.sync.bigquery
        return bq.max_rows if bq.min_interval_s > 0 else self.cfg.sync.batch_rows

    def _pause(self, target: SyncTarget, exc: QuotaPaused) -> str:
        """BigQuery refused for quota: hold the whole service (both tables share the project's
        quota) for the refill window, or seconds for a rate limit; the batch stays open."""
        service = target.service
        refusals = self.pauses.get(service, (0.0, 0, ""))[1] + 1
        now = datetime.now(timezone.utc)
        if exc.reason == QUOTA:
            wait = quota_wait_s(now, self.cfg.sync.bigquery.quota_window_s)
        else:
            bo = self.backoffs[service]
            wait = rate_wait_s(refusals, bo.base_s, bo.cap_s)
        until = (now + timedelta(seconds=wait)).isoformat(timespec="seconds").replace("+00:00", "Z")
        msg = f"BigQuery {exc.reason}: paused until {until} ({exc})"
        # one line per pause; a rate limit that keeps refusing for seconds logs its first only
        level = logging.WARNING if refusals == 1 or exc.reason == QUOTA else logging.DEBUG
        log.log(level, "sync %s: %s", service, msg)
        self.pauses[service] = (time.monotonic() + wait, refusals, msg)
        self._state(target, "paused", msg)
        return msg

    def _resume(self, target: SyncTarget) -> bool:
        """A push went through: end the service's quota pause; True when one ended."""
        if self.pauses.pop(target.service, None) is None:
            return False
        log.info("sync %s: quota pause over, loading again", target.service)
        return True

    def _next_target(self) -> SyncTarget | None:
        now = time.monotonic()
        for t in self.targets:  # priority order
            if not self.backoffs[t.service].ready() or self.pauses.get(t.service, (0.0,))[0] > now:
                continue
            if t.pending(self.store) > 0 and t.wait_s(self.store) == 0:
                return t
        return None

    def errors(self) -> dict[str, str]:
        """The last error of every service (``bigquery``, ``gcs``) that is currently failing or
        paused for quota."""
        out = {k: b.last_error or "" for k, b in self.backoffs.items() if b.down}
        out.update({k: msg for k, (_, _, msg) in self.pauses.items()})
        return out

    def pending(self) -> dict[str, int]:
        return {t.label: t.pending(self.store) for t in self.targets}

    def close(self) -> None:
        for t in self.targets:
            t.close()


class SyncLoop:
    """Agent component: the sync thread. Built only when a sync target is configured."""

    name = "sync"

    def __init__(self, cfg: Config, backoff_base_s: float = 1.0, drain_on_stop_s: float = 10.0):
        self.cfg = cfg
        self.drain_on_stop_s = drain_on_stop_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx: Any = None
        self._backoff_base_s = backoff_base_s
        self.last: CycleResult | None = None

    def start(self, ctx: Any) -> None:
        self._ctx = ctx
        # Bus handlers run on ingest's thread: they only set an event.
        ctx.bus.subscribe("frames_committed", lambda **_: self._wake.set())
        ctx.bus.subscribe("flight_ended", lambda **_: self._wake.set())
        ctx.commands["sync_now"] = self.sync_now
        self._thread = threading.Thread(target=self._run, name="skysift-sync", daemon=True)
        self._thread.start()

    def sync_now(self, **_: Any) -> bool:
        """Wake the loop now (MQTT command, CLI). Returns at once."""
        self._wake.set()
        return True

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30 + self.drain_on_stop_s)

    def _publish(self, **payload: Any) -> None:
        if self._ctx is not None:
            self._ctx.bus.publish("sync_state", **payload)

    def _run(self) -> None:
        store = Store(self.cfg.db_path)  # one Store per thread
        syncer: Syncer | None = None
        try:
            while not self._stop.is_set():
                try:
                    if syncer is None:
                        syncer = Syncer(
                            self.cfg, store, build_targets(self.cfg), self._publish, self._backoff_base_s
                        )
                    self.last = syncer.cycle(self._stop)
                    self._ctx.stats.sync_pending = dict(self.last.pending)
                    self._check_budget(store)
                    wait = self.cfg.sync.interval_s
                    nxt = syncer.next_wait()
                    if nxt is not None:
                        wait = min(wait, max(nxt, 0.05))
                except Exception:
                    log.exception("sync loop iteration failed")
                    wait = min(self.cfg.sync.interval_s, 10.0)
                self._wake.wait(wait)
                self._wake.clear()
            self._drain(syncer)
        finally:
            if syncer is not None:
                syncer.close()
            store.close()

    def _drain(self, syncer: Syncer | None) -> None:
        # On stop (end of `skysift run --once`, service stop) with the link up, push what the
        # last frames left pending, for a bounded time: stopping must stay quick, and whatever
        # is left simply waits in the outbox for the next start or `skysift sync --once`.
        if syncer is None or self.drain_on_stop_s <= 0 or syncer.errors():
            return
        try:
            syncer.cycle(deadline=time.monotonic() + self.drain_on_stop_s)
        except Exception:
            log.exception("final sync on stop failed")

    def _check_budget(self, store: Store) -> None:
        # Deliveries just confirmed may free room under storage.max_gb: release it now rather
        # than at the next frame, so a paused ingest resumes as soon as the link drained.
        if self.cfg.storage.max_gb is None:
            return
        from agent.store.retention import check

        check(store, self.cfg)


def build(cfg: Config) -> SyncLoop | None:
    """For agent/components.py: the sync component when a target is configured, else None."""
    return SyncLoop(cfg) if sync_configured(cfg) else None
