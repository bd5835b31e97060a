"""A small in-process event bus: how the pipeline tells the other parts what happened.

Events (name: payload):
- ``frames_committed``: ``rows`` (list of frame row dicts just committed, in commit order)
- ``flight_started`` / ``flight_ended``: ``flight_id``
- ``progress``: ``count`` (frames committed so far): the watchdog feeds on it
- ``paused`` / ``resumed``: ``reason`` (disk full, storage budget)
- ``engine_fallback``: ``from``, ``to``, ``reason``
- ``sync_state``: ``target``, ``state`` (``ok``, ``down``, ``paused`` for a BigQuery quota), ``error``

Handlers run on the publisher's thread, so they must only hand work off (set an event, put on
a queue, bump a counter): a slow handler would slow ingest.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[..., None]


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._lock = threading.Lock()

    def subscribe(self, event: str, handler: Handler) -> None:
        with self._lock:
            self._handlers[event].append(handler)

    def publish(self, event: str, **payload: Any) -> None:
        with self._lock:
            handlers = list(self._handlers.get(event, ()))
        for h in handlers:
            try:
                h(**payload)
            except Exception:  # a broken subscriber must not break ingest
                log.exception("handler %r for event %s failed", h, event)
