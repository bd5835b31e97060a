"""One retry helper for every link (sync targets, the camera stream): capped exponential
backoff with full jitter.

Its link-state log lines come from :class:`agent.core.logutil.LinkLog`: an outage reads as one
"link down" line, a reminder now and then (never one line per retry), and one "recovered" line.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from agent.core.logutil import LinkLog

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
        self.next_at = 0.0
        self._clock = clock
        self._rng = rng or random.Random()
        self._log = LinkLog(log, name, remind_s=remind_every_s, clock=clock)

    @property
    def failures(self) -> int:
        """Consecutive failed attempts (0 while the link is up)."""
        return self._log.failures

    @property
    def last_error(self) -> str | None:
        return self._log.last_error

    @property
    def down(self) -> bool:
        return self._log.failing

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
        self._log.failure(error)
        self.next_at = self._clock() + self.next_delay()
        return self._log.failures == 1

    def success(self) -> bool:
        """Record a successful attempt; return True when this ends an outage."""
        self.next_at = 0.0
        return self._log.success()
