"""Logging for links that fail and recover (broker, cloud, camera stream).

A link that is down for an hour must not write a line per retry into the journal of a drone
with a small disk, yet the operator must see that it went down, that it is still down, and when
it came back. :class:`LinkLog` gives exactly that: the first error, then a reminder at most every
``remind_s`` seconds (with the failure count), then one "recovered" line. It is the only such
logger: :class:`agent.core.backoff.Backoff` logs through it, so every link (MQTT broker, sync
targets, camera stream, the commit retry) reads the same in the journal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class LinkLog:
    """Rate-limited failure logging for one link. Not thread-safe: use one per loop."""

    def __init__(
        self,
        logger: logging.Logger,
        link: str,
        remind_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logger = logger
        self.link = link
        self.remind_s = remind_s
        self._clock = clock
        self.failures = 0
        self.since: float | None = None
        self._last_logged = 0.0
        self.last_error: str | None = None

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failure(self, error: object) -> None:
        """Record a failed attempt; logs the first one and then rate-limited reminders."""
        now = self._clock()
        self.failures += 1
        self.last_error = str(error) or type(error).__name__
        if self.failures == 1:
            self.since = now
            self._last_logged = now
            self.logger.warning("%s: link down: %s", self.link, self.last_error)
        elif now - self._last_logged >= self.remind_s:
            self._last_logged = now
            self.logger.warning(
                "%s: still down after %d attempts over %.0fs: %s",
                self.link,
                self.failures,
                now - (now if self.since is None else self.since),
                self.last_error,
            )
        else:
            self.logger.debug("%s: down (attempt %d): %s", self.link, self.failures, self.last_error)

    def success(self) -> bool:
        """Record a successful attempt; logs one "recovered" line after a failure streak.

        Returns True when this success ended an outage."""
        ended = self.failures > 0
        if ended:
            now = self._clock()
            self.logger.info(
                "%s: recovered after %d failed attempts over %.0fs",
                self.link,
                self.failures,
                now - (now if self.since is None else self.since),
            )
        self.failures = 0
        self.since = None
        self.last_error = None
        return ended
