"""The station's MQTT side: every device under the topic prefix, written to station.db.

It subscribes to ``<prefix>/+/status``, ``<prefix>/+/frames`` and ``<prefix>/+/flights/#``
(agent.live.payloads.Topics names them for one device). paho's callbacks only queue what they
hear; the ``station-writer`` thread parses, stores and tells the map (``changed``). The queue
is bounded: a station that cannot keep up drops and counts frame messages rather than grow
without end (the retained status and flight summaries come back on the next reconnect).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.core.config import MqttConfig
from agent.core.errors import ConfigError
from agent.core.logutil import LinkLog
from agent.live.client import RECONNECT_MAX_S, RECONNECT_MIN_S, apply_credentials, connect_error
from agent.station.store import StationStore

log = logging.getLogger(__name__)

QUEUE_MAX = 10_000


def topic_filters(prefix: str) -> list[str]:
    """What the station subscribes to, for every device under ``prefix``."""
    base = prefix.rstrip("/")
    return [f"{base}/+/status", f"{base}/+/frames", f"{base}/+/flights/#"]


def parse_topic(prefix: str, topic: str) -> tuple[str, str, str | None] | None:
    """``<prefix>/<device>/flights/<id>`` -> (device, "flights", id); status and frames have
    no id; None for any other topic (a command reply under ``flights/`` is not a flight)."""
    base = prefix.rstrip("/") + "/"
    if not topic.startswith(base):
        return None
    parts = topic[len(base):].split("/")
    if len(parts) == 2 and parts[1] in ("status", "frames"):
        return parts[0], parts[1], None
    if len(parts) == 3 and parts[1] == "flights" and parts[2]:
        return parts[0], "flights", parts[2]
    return None


class StationSubscriber:
    """Listens to the broker and fills ``store``; ``changed`` is called after each write."""

    def __init__(self, mc: MqttConfig, store: StationStore, changed: Callable[[], None]):
        if not mc.host:
            raise ConfigError("mqtt.host is not set: the station needs the broker the agents publish to")
        self.mc = mc
        self.store = store
        self.changed = changed
        self.prefix = mc.topic_prefix
        self.connected = threading.Event()
        self.last_error: str | None = None
        self.dropped = 0
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=QUEUE_MAX)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._link = LinkLog(log, f"MQTT broker {mc.host}:{mc.port}", remind_s=60.0)
        self.client = self._build_client()

    def _build_client(self) -> mqtt.Client:
        mc = self.mc
        # A station has no last will: it publishes nothing, and must never look like a device.
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"skysift-station-{socket.gethostname()}-{os.getpid()}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        apply_credentials(client, mc)  # the same user, password and TLS as the agent
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    @property
    def address(self) -> str:
        return f"{self.mc.host}:{self.mc.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="station-writer", daemon=True)
        self._thread.start()
        # connect_async: the page serves what station.db holds while the broker is away.
        self.client.connect_async(self.mc.host, self.mc.port, keepalive=self.mc.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- paho's thread: record and hand off ----------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.last_error = f"connection refused: {reason_code}"
            self._link.failure(self.last_error)
            return
        self.last_error = None
        self._link.success()
        # Subscribing here re-subscribes after every reconnect; retained status and flight
        # summaries arrive at once, so a station started late knows every device.
        client.subscribe([(f, 1) for f in topic_filters(self.prefix)])
        self.connected.set()
        self.changed()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError`: the exception being handled says why.
        self.last_error = connect_error(sys.exc_info()[1])
        self._link.failure(self.last_error)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was and not self._stop.is_set():
            self.last_error = f"disconnected: {reason_code}"
            self._link.failure(self.last_error)
            self.changed()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._queue.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:
            self.dropped += 1

    # --- the writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                topic, payload = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                if self.handle(topic, payload):
                    self.changed()
            except Exception:
                log.exception("station: cannot store the message on %s", topic)

    def handle(self, topic: str, payload: bytes) -> bool:
        """Store one message; False when it is not one the station keeps (or not JSON)."""
        where = parse_topic(self.prefix, topic)
        if where is None or not payload:  # an empty retained message clears a topic
            return False
        try:
            msg = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning("station: %s is not JSON; ignored", topic)
            return False
        if not isinstance(msg, dict):
            return False
        device, kind, flight_id = where
        if kind == "status":
            self.store.device_status(device, msg)
        elif kind == "flights":
            self.store.flight(device, str(flight_id), msg)
        elif msg.get("frame_id"):
            self.store.frame(device, msg)
        else:
            return False
        return True
