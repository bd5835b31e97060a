"""The MQTT live feed: status, per-frame results, flight summaries, commands and telemetry.

Topics and payloads are in :mod:`agent.live.payloads`, commands in :mod:`agent.live.commands`,
telemetry in :mod:`agent.live.telemetry`, Home Assistant discovery in :mod:`agent.live.homeassistant`.

Delivery (nothing lost while the broker is away):

- Frame messages come from the SQLite outbox, not from memory: a frame is pending for the
  ``mqtt`` target until the broker acknowledged its message (QoS 1 PUBACK, via ``on_publish``),
  and only then is it marked delivered. After a reconnect paho re-sends what was in flight;
  after a restart the publisher starts again from the oldest pending frame. Order is commit
  order. Delivery is at-least-once: a frame acknowledged just before a crash, but not yet marked,
  is sent again, so consumers de-duplicate by ``frame_id``.
- ``mqtt.outbox_max_rows`` bounds the unsent backlog: beyond it the oldest unsent frames are
  marked ``dropped`` for MQTT (their rows, images and cloud sync are untouched).

Threads: paho's network thread runs the callbacks, which only record and wake; the
``mqtt-publisher`` thread owns the Store connection and every outbox/summary/status publish;
the ``mqtt-commands`` thread runs remote commands, which may take a while (a flight start
writes to the database) without holding up either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import ssl
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.core.config import Config, MqttConfig, resolve_secret_path
from agent.core.errors import ConfigError
from agent.core.logutil import LinkLog
from agent.core.runtime import AgentContext, MqttState
from agent.live.commands import CommandDispatcher, CommandError
from agent.live.homeassistant import discovery_messages
from agent.live.payloads import (
    Topics,
    dumps,
    flight_summary,
    frame_message,
    offline_status,
    versions,
)
from agent.live.telemetry import TelemetryBuffer, TelemetryError, parse_position
from agent.store.db import Store, utcnow
from sync.pending import MQTT
from sync.pending import backlog as count_backlog

log = logging.getLogger(__name__)

TARGET = MQTT
#: frame messages published but not yet acknowledged; beyond this the publisher waits for acks
#: (bounds paho's memory and what is re-sent after a reconnect)
MAX_INFLIGHT = 100
#: an in-flight message with no acknowledgement this long after (re)connecting is given up on
#: and sent again from the outbox (paho normally re-sends by itself; this is the safety net)
STALE_INFLIGHT_S = 60.0
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
PASSWORD_ENV = "SKYSIFT_MQTT_PASSWORD"


def read_password(mc: MqttConfig) -> str | None:
    """The broker password: ``mqtt.password_file`` (also found by name in systemd's
    ``$CREDENTIALS_DIRECTORY``), else ``$SKYSIFT_MQTT_PASSWORD``, else none."""
    if mc.password_file is not None:
        path = resolve_secret_path(mc.password_file)
        assert path is not None
        try:
            # Files written with `echo` end in a newline that is not part of the password.
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"mqtt.password_file: cannot read {path}: {exc.strerror or exc}"
            ) from None
    return os.environ.get(PASSWORD_ENV) or None


def build_client(cfg: Config, topics: Topics) -> mqtt.Client:
    """A configured but unconnected paho client: will, auth, TLS, backoff."""
    mc = cfg.mqtt
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=mc.client_id or f"skysift-{cfg.device_id}",
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    client.enable_logger(logging.getLogger(f"{__name__}.paho"))
    client.max_inflight_messages_set(MAX_INFLIGHT)
    client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    client.will_set(topics.status, dumps(offline_status(cfg.device_id)), qos=1, retain=True)
    password = read_password(mc)
    if mc.username:
        client.username_pw_set(mc.username, password)
    elif password:
        log.warning("an MQTT password is set but mqtt.username is not: connecting anonymously")
    if mc.tls.ca_file is not None:
        if (mc.tls.cert_file is None) != (mc.tls.key_file is None):
            raise ConfigError("mqtt.tls: set both cert_file and key_file, or neither")
        try:
            # Certificate and host name verification stay on: never tls_insecure_set(True).
            client.tls_set(
                ca_certs=str(mc.tls.ca_file),
                certfile=str(mc.tls.cert_file) if mc.tls.cert_file else None,
                keyfile=str(mc.tls.key_file) if mc.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"mqtt.tls: cannot load the certificates: {exc}") from None
    elif mc.tls.cert_file or mc.tls.key_file:
        raise ConfigError("mqtt.tls: cert_file/key_file need ca_file (TLS is on only with a CA)")
    return client


@dataclass
class _InFlight:
    frame_id: str
    seq: int
    sent: float


class MqttPublisher:
    """The MQTT component: see the module docstring. Built only when ``mqtt.host`` is set."""

    name = "mqtt"

    def __init__(self, cfg: Config, *, max_inflight: int = MAX_INFLIGHT):
        if not cfg.mqtt.host:
            raise ConfigError("mqtt.host is not set: MQTT is off")
        if not cfg.mqtt.topic_prefix.strip("/") or any(c in cfg.mqtt.topic_prefix for c in "+#"):
            raise ConfigError("mqtt.topic_prefix: must be non-empty and contain no '+' or '#'")
        self.cfg = cfg
        self.topics = Topics(cfg)
        self.max_inflight = max_inflight
        self.client = build_client(cfg, self.topics)  # raises ConfigError before anything starts
        self.telemetry = (
            TelemetryBuffer(cfg.mqtt.telemetry_max_age_s) if cfg.mqtt.telemetry_topic else None
        )
        self.ctx: AgentContext | None = None
        self.connected = threading.Event()
        #: set once the broker confirmed the command/telemetry subscriptions of this connection
        self.subscribed = threading.Event()
        self.last_error: str | None = None
        self._last_link: str | None = None  # "ok" | "down": the broker link as last reported
        self._refused = False
        self.published = 0  # frame messages acknowledged by the broker (this process)

        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards the fields bus handlers and callbacks touch
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._commands: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=64)
        self._status_requests: list[Future] = []
        self._conn_gen = 0
        self._conn_time = 0.0
        self._committed = True  # check the outbox budget once at start
        # "the outbox may hold unsent frames past the cursor": saves a query a second when idle
        self._outbox_maybe = True
        self._status_dirty = True
        self._status_counts_dirty = False
        self._dirty_flights: set[str] = set()
        self._forced_flights: set[str] = set()
        self._current_flight: str | None = None
        self._sync_state: dict[str, dict[str, Any]] = {}
        self._paused: str | None = None
        self._status_cache: dict[str, Any] = {"state": "online", "device_id": cfg.device_id}
        self._inflight: dict[int, _InFlight] = {}
        # paho's thread runs every callback that logs here: one thread, as LinkLog needs.
        self._conn_log = LinkLog(log, f"MQTT broker {cfg.mqtt.host}:{cfg.mqtt.port}", remind_s=60.0)
        self._threads: list[threading.Thread] = []
        self._dispatcher: CommandDispatcher | None = None
        self._versions: dict[str, str | None] = {}

    # --- component ----------------------------------------------------------------------------
    def start(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self._current_flight = ctx.stats.current_flight
        self._versions = versions()  # engines are imported by now (components start last)
        self._status_cache = self._status_base()
        self._dispatcher = CommandDispatcher(ctx, self.status_now)
        if self.telemetry is not None:
            ctx.telemetry = self.telemetry
        ctx.commands["publish_status"] = self.request_status
        bus = ctx.bus
        bus.subscribe("frames_committed", self._on_frames_committed)
        bus.subscribe("flight_started", self._on_flight_started)
        bus.subscribe("flight_ended", self._on_flight_ended)
        bus.subscribe("paused", self._on_paused)
        bus.subscribe("resumed", self._on_resumed)
        bus.subscribe("engine_fallback", self._on_status_change)
        bus.subscribe("sync_state", self._on_sync_state)

        c = self.client
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        for name, target in (("mqtt-publisher", self._run_publisher), ("mqtt-commands", self._run_commands)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        # connect_async + loop_start: a missing broker never blocks start-up or ingest; paho's
        # thread keeps retrying with the backoff set in build_client.
        c.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, keepalive=self.cfg.mqtt.keepalive)
        c.loop_start()
        log.info("MQTT: publishing to %s:%d under %s/", self.cfg.mqtt.host, self.cfg.mqtt.port, self.topics.base)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=10)
        if self.connected.is_set():
            # A clean stop sends no last will: say "offline" ourselves, and wait for it briefly.
            info = self.client.publish(
                self.topics.status, dumps(offline_status(self.cfg.device_id)), qos=1, retain=True
            )
            # RuntimeError/ValueError: the connection dropped meanwhile; the last will covers it.
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=3)
        # paho's network thread may run one more loop after disconnect() and log a spurious
        # "Client is not connected" error: the stop is deliberate, so silence it.
        self.client.disable_logger()
        self.client.disconnect()
        self.client.loop_stop()

    # --- public helpers -------------------------------------------------------------------------
    def request_status(self) -> None:
        """Publish the status soon (the ``publish_status`` command of the agent)."""
        with self._lock:
            self._status_dirty = True
        self._wake.set()

    def status_now(self, timeout: float = 10.0) -> dict[str, Any]:
        """Publish the status now (on the publisher thread) and return it."""
        fut: Future = Future()
        with self._lock:
            self._status_requests.append(fut)
        self._wake.set()
        try:
            return fut.result(timeout=timeout)
        except FutureTimeout:
            raise CommandError("the publisher did not answer in time") from None

    # --- paho callbacks (paho's network thread: record and wake, nothing more) -----------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refused = True  # paho disconnects next: keep this reason, not that one
            self.last_error = f"connection refused: {reason_code}"
            self._conn_log.failure(self.last_error)
            return
        self.last_error = None
        self._conn_log.success()
        log.info("MQTT connected to %s:%d", self.cfg.mqtt.host, self.cfg.mqtt.port)
        # Subscribing here re-subscribes after every reconnect (clean session forgets them).
        subs = [(self.topics.cmd_filter, 1)]
        if self.topics.telemetry:
            subs.append((self.topics.telemetry, 0))
        client.subscribe(subs)
        with self._lock:
            cached = dict(self._status_cache, state="online")
            self._conn_gen += 1
            self._conn_time = time.monotonic()
        # "online" first, from the last snapshot; the publisher thread follows with fresh counts.
        client.publish(self.topics.status, dumps(cached), qos=1, retain=True)
        self.connected.set()
        self._wake.set()
        self._link_state("ok")

    def _link_state(self, state: str, error: str | None = None) -> None:
        """Tell status and metrics about the broker link, on changes only (a broker that stays
        away makes paho retry, and fail, every few seconds)."""
        if state == self._last_link or self.ctx is None:
            return
        self._last_link = state
        self.ctx.bus.publish("sync_state", target="mqtt", state=state, error=error)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        bad = [str(rc) for rc in reason_codes if rc.is_failure]
        if bad:
            log.error("MQTT broker refused the subscriptions (%s): no commands or telemetry", ", ".join(bad))
            return
        self.subscribed.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.last_error = "cannot reach the broker"
        self._conn_log.failure(self.last_error)
        self._link_state("down", self.last_error)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        self.subscribed.clear()
        refused, self._refused = self._refused, False
        if was and not self._stop.is_set():
            self.last_error = f"disconnected: {reason_code}"
            self._conn_log.failure(self.last_error)
        elif not was and not refused and not self._stop.is_set():
            # Closed before any CONNACK: with TLS 1.3 a rejected client certificate shows up
            # only here (paho logs the TLS alert itself).
            self.last_error = f"connection closed before it was accepted: {reason_code}"
            self._conn_log.failure(self.last_error)
        if not self._stop.is_set():
            self._link_state("down", self.last_error)
        self._wake.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._acks.put(mid)
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.topics.telemetry and mqtt.topic_matches_sub(self.topics.telemetry, msg.topic):
            if self.telemetry is None:
                return
            try:
                self.telemetry.add(parse_position(msg.payload))
            except TelemetryError as exc:
                self.telemetry.invalid += 1
                if self.telemetry.invalid in (1, 10, 100) or self.telemetry.invalid % 1000 == 0:
                    log.warning("ignoring telemetry on %s: %s (%d so far)", msg.topic, exc, self.telemetry.invalid)
            return
        name = self.topics.command_name(msg.topic)
        if name is None:
            return
        try:
            self._commands.put_nowait((name, bytes(msg.payload)))
        except queue.Full:
            log.warning("MQTT command %s dropped: too many commands waiting", name)

    # --- bus handlers (ingest thread: record and wake) -------------------------------------------
    def _on_frames_committed(self, rows: list[dict] | None = None, **_: Any) -> None:
        with self._lock:
            for r in rows or ():
                if r.get("flight_id"):
                    self._dirty_flights.add(r["flight_id"])
            self._committed = True
            self._outbox_maybe = True
            self._status_counts_dirty = True
        self._wake.set()

    def _on_flight_started(self, flight_id: str | None = None, **_: Any) -> None:
        with self._lock:
            if flight_id:
                self._forced_flights.add(flight_id)
                self._current_flight = flight_id
            self._status_dirty = True
        self._wake.set()

    def _on_flight_ended(self, flight_id: str | None = None, **_: Any) -> None:
        with self._lock:
            if flight_id:
                self._forced_flights.add(flight_id)
                if self._current_flight == flight_id:
                    self._current_flight = None
            self._status_dirty = True
        self._wake.set()

    def _on_paused(self, reason: str | None = None, **_: Any) -> None:
        self._paused = reason or "paused"
        self.request_status()

    def _on_resumed(self, **_: Any) -> None:
        self._paused = None
        self.request_status()

    def _on_status_change(self, **_: Any) -> None:
        self.request_status()

    def _on_sync_state(self, target: str | None = None, state: str | None = None, error: Any = None, **_: Any) -> None:
        if target:
            self._sync_state[target] = {"state": state, "error": None if error is None else str(error)}
        self.request_status()

    # --- the publisher thread ------------------------------------------------------------------
    def _run_publisher(self) -> None:
        store = Store(self.cfg.db_path)
        seen_gen = 0
        last_status = 0.0
        last_flight: dict[str, float] = {}
        try:
            while True:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                if self._stop.is_set():
                    self._drain(store)
                    return
                try:
                    with self._lock:
                        gen = self._conn_gen
                    if gen != seen_gen and self.connected.is_set():
                        seen_gen = gen
                        self._on_new_connection(store)
                        last_status = time.monotonic()
                        last_flight.clear()
                    self._process_acks(store)
                    self._enforce_budget(store)
                    self._publish_frames(store)
                    self._publish_flights(store, last_flight)
                    last_status = self._publish_status(store, last_status)
                except Exception:
                    # The database may be busy or the disk full for a moment: keep going.
                    log.exception("MQTT publisher step failed; retrying")
                    self._stop.wait(1.0)
        finally:
            self._fail_status_requests()
            store.close()

    def _drain(self, store: Store, timeout: float = 2.0) -> None:
        """On stop, give in-flight messages a moment to be acknowledged and recorded."""
        deadline = time.monotonic() + timeout
        while self._inflight and self.connected.is_set() and time.monotonic() < deadline:
            self._process_acks(store)
            time.sleep(0.02)
        self._process_acks(store)

    def _on_new_connection(self, store: Store) -> None:
        if self.cfg.mqtt.homeassistant_discovery:
            for topic, payload in discovery_messages(self.cfg, self.topics):
                self.client.publish(topic, dumps(payload), qos=1, retain=True)
        with self._lock:
            self._status_dirty = True
            self._outbox_maybe = True
            # Summaries that changed while we were away, and the current flight's.
            if self._current_flight:
                self._forced_flights.add(self._current_flight)
            self._forced_flights |= self._dirty_flights
            self._dirty_flights.clear()

    def _process_acks(self, store: Store) -> None:
        done: list[str] = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            entry = self._inflight.pop(mid, None)
            if entry is not None:  # acks of status, summaries and replies are not tracked
                done.append(entry.frame_id)
        if done:
            store.mark_delivered(TARGET, done)
            self.published += len(done)
            with self._lock:
                self._status_counts_dirty = True
        # Safety net: after a reconnect paho re-sends what was in flight; if an ack still never
        # comes, forget those messages so they are sent again from the outbox.
        if self._inflight and self.connected.is_set():
            oldest = min(e.sent for e in self._inflight.values())
            if time.monotonic() - max(oldest, self._conn_time) > STALE_INFLIGHT_S:
                log.warning("MQTT: %d messages never acknowledged; sending them again", len(self._inflight))
                self._inflight.clear()
                with self._lock:
                    self._outbox_maybe = True

    def _enforce_budget(self, store: Store) -> None:
        with self._lock:
            check, self._committed = self._committed, False
        limit = self.cfg.mqtt.outbox_max_rows
        if not check or limit is None:
            return
        excess = store.count_pending(TARGET) - limit
        if excess <= 0:
            return
        flying = {e.frame_id for e in self._inflight.values()}
        rows = store.pending(TARGET, limit=excess + len(flying))
        drop = [r["frame_id"] for r in rows if r["frame_id"] not in flying][:excess]
        store.mark_dropped(TARGET, drop, f"MQTT outbox over mqtt.outbox_max_rows={limit}")
        log.warning("MQTT outbox over %d frames: dropped the %d oldest unsent messages "
                    "(the frames stay in the database)", limit, len(drop))

    def _publish_frames(self, store: Store) -> None:
        qos = self.cfg.mqtt.qos
        while self.connected.is_set() and not self._stop.is_set():
            room = self.max_inflight - len(self._inflight)
            if room <= 0:
                return
            with self._lock:
                if not self._outbox_maybe:
                    return
                self._outbox_maybe = False
            # Continue after what is already in flight (paho re-sends those by itself).
            cursor = max((e.seq for e in self._inflight.values()), default=0)
            rows = store.pending(TARGET, limit=room, where="f.rowid > ?", args=[cursor])
            if len(rows) == room:
                with self._lock:
                    self._outbox_maybe = True  # a full batch: there may be more behind it
            for row in rows:
                info = self.client.publish(self.topics.frames, dumps(frame_message(row)), qos=qos)
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    log.warning("MQTT publish of frame %s failed: %s", row["frame_id"], mqtt.error_string(info.rc))
                    with self._lock:
                        self._outbox_maybe = True
                    return
                # NO_CONN: paho keeps the message and sends it on reconnect, so it is in flight.
                self._inflight[info.mid] = _InFlight(row["frame_id"], row["seq"], time.monotonic())
                if info.rc == mqtt.MQTT_ERR_NO_CONN:
                    return

    def _publish_flights(self, store: Store, last: dict[str, float]) -> None:
        if not self.connected.is_set():
            return
        now = time.monotonic()
        interval = self.cfg.mqtt.flight_summary_interval_s
        with self._lock:
            due = set(self._forced_flights)
            self._forced_flights.clear()
            for fid in list(self._dirty_flights):
                if now - last.get(fid, 0.0) >= interval:
                    due.add(fid)
            # The rest wait for the throttle; the loop wakes at least once a second to re-check.
            self._dirty_flights -= due
        for fid in sorted(due):
            row = store.flight(fid)
            if row is None:
                continue
            self.client.publish(self.topics.flight(fid), dumps(flight_summary(row)),
                                qos=max(self.cfg.mqtt.qos, 1), retain=True)
            last[fid] = now

    def _publish_status(self, store: Store, last: float) -> float:
        now = time.monotonic()
        with self._lock:
            requests, self._status_requests = self._status_requests, []
            due = self._status_dirty or bool(requests) or (
                self._status_counts_dirty and now - last >= self.cfg.mqtt.flight_summary_interval_s
            )
            if not due:
                return last
            self._status_dirty = False
            self._status_counts_dirty = False
        payload = self._build_status(store)
        with self._lock:
            self._status_cache = payload
        if self.connected.is_set():
            self.client.publish(self.topics.status, dumps(payload), qos=1, retain=True)
        for fut in requests:
            fut.set_result(payload)
        return now

    def _fail_status_requests(self) -> None:
        with self._lock:
            requests, self._status_requests = self._status_requests, []
        for fut in requests:
            fut.set_exception(CommandError("the MQTT publisher is stopping"))

    def _status_base(self) -> dict[str, Any]:
        """The part of the status that needs no database (also the first "online" message)."""
        ctx = self.ctx
        assert ctx is not None
        stats = ctx.stats
        with self._lock:
            # From the flight events, not stats.current_flight: that one is not cleared at the end.
            current = self._current_flight
        return {
            "state": "online",
            "device_id": self.cfg.device_id,
            "run_id": ctx.run_id,
            "versions": self._versions,
            "engine": stats.engine,
            "device": stats.device,
            "precision": stats.precision,
            "current_flight": current,
            "paused": stats.paused_reason or self._paused,
        }

    def _build_status(self, store: Store) -> dict[str, Any]:
        assert self.ctx is not None
        stats = self.ctx.stats
        totals = store.db.execute(
            "SELECT COALESCE(SUM(frames), 0), COALESCE(SUM(damaged), 0), COALESCE(SUM(rejected), 0) FROM flights"
        ).fetchone()
        backlog = count_backlog(self.cfg, store)
        status = self._status_base()
        status.update({
            "frames": {"total": totals[0], "damaged": totals[1], "rejected": totals[2],
                       "this_run": stats.frames_committed},
            "backlog": backlog,
            "sync": dict(self._sync_state),
            "telemetry": None if self.telemetry is None else {"fixes": len(self.telemetry)},
            "updated_at": utcnow(),
        })
        stats.mqtt = MqttState(connected=self.connected.is_set(), backlog=backlog[TARGET],
                               in_flight=len(self._inflight), last_error=self.last_error)
        return status

    # --- the command thread --------------------------------------------------------------------
    def _run_commands(self) -> None:
        assert self._dispatcher is not None
        while not self._stop.is_set():
            try:
                name, payload = self._commands.get(timeout=0.5)
            except queue.Empty:
                continue
            reply = self._dispatcher.handle(name, payload)
            log.info("MQTT command %s: %s", name, "ok" if reply.get("ok") else reply.get("error"))
            self.client.publish(self.topics.reply(name), dumps(reply), qos=1)
