"""The MQTT live feed: status, per-frame results, flight summaries, commands and telemetry.

This module runs the parts: the paho client (:mod:`agent.live.client`), the frames feed
(:mod:`agent.live.outbox`: nothing lost while the broker is away), the status message
(:mod:`agent.live.status`), topics and payloads (:mod:`agent.live.payloads`), commands,
telemetry and Home Assistant discovery (their own modules).

Threads: paho's network thread runs the callbacks, which only record and wake; the
``mqtt-publisher`` thread owns the Store connection and every outbox/summary/status publish;
the ``mqtt-commands`` thread runs remote commands, which may take a while (a flight start
writes to the database) without holding up either.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import paho.mqtt.client as mqtt

from agent.core.config import Config
from agent.core.errors import ConfigError
from agent.core.logutil import LinkLog
from agent.core.runtime import AgentContext, MqttState
from agent.live.auth import CommandAuth, load_key
from agent.live.client import MAX_INFLIGHT, build_client, connect_error
from agent.live.commands import CommandDispatcher, CommandError, CommandInbox
from agent.live.flight_feed import FlightFeed
from agent.live.homeassistant import discovery_messages
from agent.live.outbox import Outbox
from agent.live.payloads import Topics, dumps, offline_status
from agent.live.status import LiveStatus
from agent.live.telemetry import TelemetryBuffer
from agent.store.db import Store
from sync.pending import MQTT

log = logging.getLogger(__name__)


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
        self.client = build_client(cfg, self.topics)  # raises ConfigError before anything starts
        key = load_key(cfg.mqtt)  # also a ConfigError before anything starts
        self._auth = None if key is None else CommandAuth(key, cfg.device_id, cfg.mqtt.command_max_age_s)
        self.outbox = Outbox(cfg, self.client, self.topics.frames, max_inflight)
        self.flights = FlightFeed(cfg, self.client, self.topics)
        self.telemetry = (
            TelemetryBuffer(cfg.mqtt.telemetry_max_age_s) if cfg.mqtt.telemetry_topic else None
        )
        self.ctx: AgentContext | None = None
        self.connected = threading.Event()
        #: set once the broker confirmed the command/telemetry subscriptions of this connection
        self.subscribed = threading.Event()
        self.last_error: str | None = None
        self._last_link: tuple[str, str | None] | None = None  # (state, error) last reported
        self._refused = False
        self.status: LiveStatus | None = None  # built at start, with the agent's context

        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards the fields bus handlers and callbacks touch
        self._status_requests: list[Future] = []
        self._conn_gen = 0
        self._status_dirty = True
        self._status_counts_dirty = False
        self._status_cache: dict[str, Any] = {"state": "online", "device_id": cfg.device_id}
        # paho's thread runs every callback that logs here: one thread, as LinkLog needs.
        self._conn_log = LinkLog(log, f"MQTT broker {cfg.mqtt.host}:{cfg.mqtt.port}", remind_s=60.0)
        self._threads: list[threading.Thread] = []
        self._inbox: CommandInbox | None = None

    # --- component ----------------------------------------------------------------------------
    def start(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.status = LiveStatus(self.cfg, ctx, self.telemetry)
        # The first retained "online" carries the counts Home Assistant's templates read.
        store = Store(self.cfg.db_path)
        try:
            self._status_cache = self.status.build(store, MqttState())
        finally:
            store.close()
        self._inbox = CommandInbox(self.cfg.mqtt, CommandDispatcher(ctx, self.status_now), self._auth, log)
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
        # Right after the pipeline ended its flights: the publisher thread drains (_drain).
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=self.cfg.mqtt.drain_s + 10)
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

    @property
    def _live(self) -> LiveStatus:
        assert self.status is not None, "used only once started"
        return self.status

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
        self.outbox.reconnected()
        # "online" first, from the last snapshot; the publisher thread follows with fresh counts.
        client.publish(self.topics.status, dumps(cached), qos=1, retain=True)
        self.connected.set()
        self._wake.set()
        self._link_state("ok")

    def _link_state(self, state: str, error: str | None = None) -> None:
        """Tell status and metrics about the broker link, on changes only (a broker that stays
        away makes paho retry, and fail, every few seconds); a new error while down is a change
        (a broker back with a certificate we do not trust is no longer "unreachable")."""
        if (state, error) == self._last_link or self.ctx is None:
            return
        self._last_link = (state, error)
        self.ctx.bus.publish("sync_state", target="mqtt", state=state, error=error)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        bad = [str(rc) for rc in reason_codes if rc.is_failure]
        if bad:
            log.error("MQTT broker refused the subscriptions (%s): no commands or telemetry", ", ".join(bad))
            return
        self.subscribed.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError`, without the exception: it is the one
        # being handled, and it says whether the broker is away or its certificate is wrong.
        self.last_error = connect_error(sys.exc_info()[1])
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
        self.outbox.acked(mid)
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.topics.telemetry and mqtt.topic_matches_sub(self.topics.telemetry, msg.topic):
            if self.telemetry is not None:
                self.telemetry.receive(msg.topic, bytes(msg.payload))
            return
        name = self.topics.command_name(msg.topic)
        if name is None or self._inbox is None:
            return
        refused = self._inbox.offer(name, msg.topic, bytes(msg.payload), bool(msg.retain))
        if refused is not None:
            client.publish(self.topics.reply(name), dumps(refused), qos=1)

    # --- bus handlers (ingest thread: record and wake) -------------------------------------------
    def _on_frames_committed(self, rows: list[dict] | None = None, **_: Any) -> None:
        for r in rows or ():
            if r.get("flight_id"):
                self.flights.changed(r["flight_id"])
        with self._lock:
            self._status_counts_dirty = True
        self.outbox.committed()
        self._wake.set()

    def _on_flight_started(self, flight_id: str | None = None, **_: Any) -> None:
        if flight_id:
            self._live.flight_started(flight_id)
        self._flight_changed(flight_id)

    def _on_flight_ended(self, flight_id: str | None = None, **_: Any) -> None:
        if flight_id:
            self._live.flight_ended(flight_id)
        self._flight_changed(flight_id)

    def _flight_changed(self, flight_id: str | None) -> None:
        if flight_id:
            self.flights.force(flight_id)
        with self._lock:
            self._status_dirty = True
        self._wake.set()

    def _on_paused(self, reason: str | None = None, **_: Any) -> None:
        self._live.paused(reason or "paused")
        self.request_status()

    def _on_resumed(self, **_: Any) -> None:
        self._live.paused(None)
        self.request_status()

    def _on_status_change(self, **_: Any) -> None:
        self.request_status()

    def _on_sync_state(self, target: str | None = None, state: str | None = None, error: Any = None, **_: Any) -> None:
        if target:
            self._live.link(target, state, error)
        self.request_status()

    # --- the publisher thread ------------------------------------------------------------------
    def _run_publisher(self) -> None:
        store = Store(self.cfg.db_path)
        seen_gen = 0
        last_status = 0.0
        try:
            while True:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                if self._stop.is_set():
                    self._drain(store, seen_gen)
                    return
                try:
                    with self._lock:
                        gen = self._conn_gen
                    if gen != seen_gen and self.connected.is_set():
                        seen_gen = gen
                        self._on_new_connection(store)
                        last_status = time.monotonic()
                    if self.outbox.process_acks(store, self.connected.is_set()):
                        with self._lock:
                            self._status_counts_dirty = True
                    self.outbox.enforce_budget(store)
                    self.outbox.publish(store, self.connected, self._stop)
                    if self.connected.is_set():
                        self.flights.publish(store)
                    last_status = self._publish_status(store, last_status)
                except Exception:
                    # The database may be busy or the disk full for a moment: keep going.
                    log.exception("MQTT publisher step failed; retrying")
                    self._stop.wait(1.0)
        finally:
            self._fail_status_requests()
            store.close()

    def _on_new_connection(self, store: Store) -> None:
        if self.cfg.mqtt.homeassistant_discovery:
            for topic, payload in discovery_messages(self.cfg, self.topics):
                self.client.publish(topic, dumps(payload), qos=1, retain=True)
        self.outbox.may_have_more()
        self.flights.reconnected(self._live.current_flight)
        with self._lock:
            self._status_dirty = True

    def _drain(self, store: Store, seen_gen: int) -> None:
        """On stop, within ``mqtt.drain_s``: wait for the broker if it is not up yet, send the
        final flight summaries (ended), the frames still owed and the final status, and wait for
        the broker to acknowledge them. Frames left unsent stay in the outbox for the next run."""
        drain_s = self.cfg.mqtt.drain_s
        deadline = time.monotonic() + drain_s
        owed = store.count_pending(MQTT)
        if self.connected.wait(drain_s):
            with self._lock:
                new_connection, self._status_dirty = self._conn_gen != seen_gen, True
            if new_connection:  # up during the wait: the main loop has not seen it
                self._on_new_connection(store)
            sent = self.flights.publish(store, final=True)
            owed = self.outbox.drain(store, self.connected, deadline)
            self._publish_status(store, 0.0, sent)
            for info in sent:
                # RuntimeError/ValueError: the connection dropped meanwhile.
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
        if owed:
            log.warning("MQTT: %d frames not acknowledged within mqtt.drain_s=%gs: they stay in "
                        "the outbox for the next run", owed, drain_s)

    def _publish_status(self, store: Store, last: float, sent: list | None = None) -> float:
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
        payload = self._live.build(store, MqttState(
            connected=self.connected.is_set(), in_flight=len(self.outbox.inflight), last_error=self.last_error
        ))
        with self._lock:
            self._status_cache = payload
        if self.connected.is_set():
            info = self.client.publish(self.topics.status, dumps(payload), qos=1, retain=True)
            if sent is not None:
                sent.append(info)
        for fut in requests:
            fut.set_result(payload)
        return now

    def _fail_status_requests(self) -> None:
        with self._lock:
            requests, self._status_requests = self._status_requests, []
        for fut in requests:
            fut.set_exception(CommandError("the MQTT publisher is stopping"))

    # --- the command thread --------------------------------------------------------------------
    def _run_commands(self) -> None:
        assert self._inbox is not None
        while not self._stop.is_set():
            done = self._inbox.next(timeout=0.5)
            if done is not None:
                self.client.publish(self.topics.reply(done[0]), dumps(done[1]), qos=1)
