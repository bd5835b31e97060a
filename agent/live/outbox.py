"""The frames feed of the MQTT live feed: the SQLite outbox, published without losing a frame.

- Frame messages come from the outbox, not from memory: a frame is pending for the ``mqtt``
  target until the broker acknowledged its message (QoS 1 PUBACK, via paho's ``on_publish``),
  and only then is it marked delivered. After a reconnect paho re-sends what was in flight;
  after a restart publishing starts again from the oldest pending frame. Order is commit
  order. Delivery is at-least-once: a frame acknowledged just before a crash, but not yet
  marked, is sent again, so consumers de-duplicate by ``frame_id``.
- ``mqtt.outbox_max_rows`` bounds the unsent backlog: beyond it the oldest unsent frames are
  marked ``dropped`` for MQTT (their rows, images and cloud sync are untouched).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from agent.core.config import Config
from agent.live.client import MAX_INFLIGHT
from agent.live.payloads import dumps, frame_message
from agent.store.db import Store
from sync.pending import MQTT

log = logging.getLogger(__name__)

TARGET = MQTT
#: an in-flight message with no acknowledgement this long after (re)connecting is given up on
#: and sent again from the outbox (paho normally re-sends by itself; this is the safety net)
STALE_INFLIGHT_S = 60.0


@dataclass
class InFlight:
    frame_id: str
    seq: int
    sent: float


class Outbox:
    """Publishes pending frames and records their acknowledgements.

    :meth:`committed`, :meth:`acked` and :meth:`reconnected` may be called from any thread
    (they only record); the other methods run on the publisher thread, which owns the Store.
    """

    def __init__(self, cfg: Config, client: mqtt.Client, topic: str, max_inflight: int = MAX_INFLIGHT):
        self.cfg = cfg
        self.client = client
        self.topic = topic
        self.max_inflight = max_inflight
        self.inflight: dict[int, InFlight] = {}
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._check_budget = True  # check the outbox budget once at start
        # "the outbox may hold unsent frames past the cursor": saves a query a second when idle
        self._maybe = True
        self._conn_time = 0.0

    # --- any thread ---------------------------------------------------------------------------
    def committed(self) -> None:
        """New frames are in the outbox."""
        with self._lock:
            self._check_budget = True
            self._maybe = True

    def may_have_more(self) -> None:
        with self._lock:
            self._maybe = True

    def acked(self, mid: int) -> None:
        """The broker acknowledged message ``mid`` (paho's thread)."""
        self._acks.put(mid)

    def reconnected(self) -> None:
        """A connection was accepted: in-flight messages are re-sent from now on."""
        self._conn_time = time.monotonic()

    # --- the publisher thread -----------------------------------------------------------------
    def process_acks(self, store: Store, connected: bool) -> int:
        """Mark acknowledged frames delivered; return how many."""
        done: list[str] = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            entry = self.inflight.pop(mid, None)
            if entry is not None:  # acks of status, summaries and replies are not tracked
                done.append(entry.frame_id)
        if done:
            store.mark_delivered(TARGET, done)
        # Safety net: after a reconnect paho re-sends what was in flight; if an ack still never
        # comes, forget those messages so they are sent again from the outbox.
        if self.inflight and connected:
            oldest = min(e.sent for e in self.inflight.values())
            if time.monotonic() - max(oldest, self._conn_time) > STALE_INFLIGHT_S:
                log.warning("MQTT: %d messages never acknowledged; sending them again", len(self.inflight))
                self.inflight.clear()
                self.may_have_more()
        return len(done)

    def enforce_budget(self, store: Store) -> None:
        with self._lock:
            check, self._check_budget = self._check_budget, False
        limit = self.cfg.mqtt.outbox_max_rows
        if not check or limit is None:
            return
        excess = store.count_pending(TARGET) - limit
        if excess <= 0:
            return
        flying = {e.frame_id for e in self.inflight.values()}
        rows = store.pending(TARGET, limit=excess + len(flying))
        drop = [r["frame_id"] for r in rows if r["frame_id"] not in flying][:excess]
        store.mark_dropped(TARGET, drop, f"MQTT outbox over mqtt.outbox_max_rows={limit}")
        log.warning("MQTT outbox over %d frames: dropped the %d oldest unsent messages "
                    "(the frames stay in the database)", limit, len(drop))

    def publish(self, store: Store, connected: threading.Event, stop: threading.Event | None = None) -> None:
        """Send pending frames while connected (and not ``stop``), up to ``max_inflight``
        unacknowledged."""
        qos = self.cfg.mqtt.qos
        while connected.is_set() and not (stop is not None and stop.is_set()):
            room = self.max_inflight - len(self.inflight)
            if room <= 0:
                return
            with self._lock:
                if not self._maybe:
                    return
                self._maybe = False
            # Continue after what is already in flight (paho re-sends those by itself).
            cursor = max((e.seq for e in self.inflight.values()), default=0)
            rows = store.pending(TARGET, limit=room, where="f.rowid > ?", args=[cursor])
            if len(rows) == room:
                self.may_have_more()  # a full batch: there may be more behind it
            for row in rows:
                payload = dumps(frame_message(row, self.cfg.mqtt.thumbnail_px))
                info = self.client.publish(self.topic, payload, qos=qos)
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    log.warning("MQTT publish of frame %s failed: %s", row["frame_id"], mqtt.error_string(info.rc))
                    self.may_have_more()
                    return
                # NO_CONN: paho keeps the message and sends it on reconnect, so it is in flight.
                self.inflight[info.mid] = InFlight(row["frame_id"], row["seq"], time.monotonic())
                if info.rc == mqtt.MQTT_ERR_NO_CONN:
                    return

    def drain(self, store: Store, connected: threading.Event, deadline: float) -> int:
        """On stop: send the frames still pending and record their acknowledgements, until all
        are acknowledged, the link drops or ``deadline`` (monotonic) passes. What is left stays
        pending for the next run. Return how many frames are still owed."""
        self.may_have_more()  # a last look: the pipeline has committed its final frames
        while connected.is_set() and time.monotonic() < deadline:
            self.process_acks(store, True)
            self.publish(store, connected)
            with self._lock:
                more = self._maybe
            if not self.inflight and not more:
                break
            time.sleep(0.02)
        self.process_acks(store, connected.is_set())
        return store.count_pending(TARGET)
