"""One retry helper for every link (sync targets, the camera stream): capped exponential
backoff with full jitter.

It also owns the link-state log lines, so that an outage reads as one "down" line, a reminder
now and then (never one line per retry), and one "recovered" line.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Backoff:
    """Consecutive-failure counter with the time of the next allowed attempt.

    ``delay = uniform(0, min(cap, base * 2**(failures-1)))`` ("full jitter"): many devices that
    lost the same uplink do not all come back at the same second.
    """

    def __init__(
        self,
        name: str,
        *,
        base_s: float = 1.0,
        cap_s: float = 300.0,
        remind_every_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ):
        self.name = name
        self.base_s = base_s
        self.cap_s = cap_s
        self.remind_every_s = remind_every_s
        self.failures = 0
        self.last_error: str | None = None
        self.next_at = 0.0
        self._clock = clock
        self._rng = rng or random.Random()
        self._down_since: float | None = None
        self._last_reminder = 0.0

    @property
    def down(self) -> bool:
        return self.failures > 0

    def ready(self) -> bool:
        """True when an attempt is allowed now."""
        return self._clock() >= self.next_at

    def wait_s(self) -> float:
        return max(0.0, self.next_at - self._clock())

    def wait(self, stop: threading.Event) -> bool:
        """Sleep until an attempt is allowed; False when ``stop`` was set first.

        Uses the wall-clock wait of ``stop`` even with a test clock: it is the thread's sleep.
        """
        return not stop.wait(self.wait_s())

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** max(0, self.failures - 1)))
        return self._rng.uniform(0, ceiling)

    def failure(self, error: str) -> bool:
        """Record a failed attempt; return True when this failure took the link down."""
        now = self._clock()
        self.failures += 1
        self.last_error = error
        self.next_at = now + self.next_delay()
        if self.failures == 1:
            self._down_since = now
            self._last_reminder = now
            log.warning("%s: link down, will retry with backoff: %s", self.name, error)
            return True
        if now - self._last_reminder >= self.remind_every_s:
            self._last_reminder = now
            log.warning(
                "%s: still down after %d attempts (%.0f s): %s",
                self.name, self.failures, now - (self._down_since or now), error,
            )
        return False

    def success(self) -> bool:
        """Record a successful attempt; return True when this ends an outage."""
        if self.failures == 0:
            return False
        log.info(
            "%s: recovered after %d failed attempts (%.0f s)",
            self.name, self.failures, self._clock() - (self._down_since or self._clock()),
        )
        self.failures = 0
        self.last_error = None
        self.next_at = 0.0
        self._down_since = None
        return True
