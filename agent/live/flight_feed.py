"""The retained flight summaries of the MQTT live feed: which are due, and publishing them.

A flight that starts or ends (or is current when a connection is accepted) gets its summary at
once; a flight whose frames change gets one at most every ``mqtt.flight_summary_interval_s``.
"""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt

from agent.core.config import Config
from agent.live.payloads import Topics, dumps, flight_summary
from agent.store.db import Store


class FlightFeed:
    """:meth:`changed`, :meth:`force` and :meth:`reconnected` may be called from any thread
    (they only record); :meth:`publish` runs on the publisher thread, which owns the Store."""

    def __init__(self, cfg: Config, client: mqtt.Client, topics: Topics):
        self.cfg = cfg
        self.client = client
        self.topics = topics
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._forced: set[str] = set()
        self._last: dict[str, float] = {}  # flight -> when its summary was last sent

    def changed(self, flight_id: str) -> None:
        """Frames of ``flight_id`` were committed: a summary is due within the interval."""
        with self._lock:
            self._dirty.add(flight_id)

    def force(self, flight_id: str) -> None:
        """``flight_id`` started or ended: its summary is due now."""
        with self._lock:
            self._forced.add(flight_id)

    def reconnected(self, current: str | None) -> None:
        """A new connection: the summaries that changed while away, and the current flight's."""
        with self._lock:
            if current:
                self._forced.add(current)
            self._forced |= self._dirty
            self._dirty.clear()
            self._last.clear()

    def publish(self, store: Store, *, final: bool = False) -> list[mqtt.MQTTMessageInfo]:
        """Publish the summaries due (with ``final``, every one still waiting for the throttle:
        the agent is stopping); return what was sent, to wait for its acknowledgements."""
        now = time.monotonic()
        interval = self.cfg.mqtt.flight_summary_interval_s
        with self._lock:
            due = set(self._forced)
            self._forced.clear()
            for fid in list(self._dirty):
                if final or now - self._last.get(fid, 0.0) >= interval:
                    due.add(fid)
            # The rest wait for the throttle; the loop wakes at least once a second to re-check.
            self._dirty -= due
        sent = []
        for fid in sorted(due):
            row = store.flight(fid)
            if row is None:
                continue
            sent.append(self.client.publish(self.topics.flight(fid), dumps(flight_summary(row)),
                                            qos=max(self.cfg.mqtt.qos, 1), retain=True))
            self._last[fid] = now
        return sent
