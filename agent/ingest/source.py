"""The source pump: iterates a frame source into the pipeline's bounded queue.

A folder waits when the queue is full or the disk has no room (it can be rescanned, nothing is
lost); a live camera drops the frame and counts it (``stats.frames_dropped``), since waiting
would only make every frame late.
"""

from __future__ import annotations

import logging
import queue

from agent.core.runtime import AgentContext
from agent.ingest.job import Counts
from agent.ingest.space import SpaceGuard
from drivers.base import Frame, FrameSource
from drivers.folder import FolderSource

log = logging.getLogger(__name__)


class SourcePump:
    """The body of the ``ingest-source`` thread."""

    def __init__(
        self,
        ctx: AgentContext,
        source: FrameSource,
        out: queue.Queue[Frame],
        space: SpaceGuard,
        counts: Counts,
    ):
        self.ctx = ctx
        self.source = source
        self.out = out
        self.space = space
        self.counts = counts

    def run(self, once: bool) -> None:
        """Hand every frame over until the source ends or ``ctx.stop`` is set."""
        stop = self.ctx.stop
        self.space.open()
        if isinstance(self.source, FolderSource):
            self.source.on_tick = lambda: self.ctx.stats.beat("source")  # alive while idle
        try:
            for frame in self.source.frames(stop, once=once):
                self.ctx.stats.beat("source")
                if self.source.lossy:
                    if not self._offer(frame):
                        continue
                elif not self._hand_over(frame):
                    return
                self.counts.backlog += 1
                self.ctx.stats.queue_depth = self.out.qsize()
        finally:
            self.space.close()

    def _offer(self, frame: Frame) -> bool:
        """A live frame: queued now, or dropped (it cannot wait for the disk or the queue)."""
        # Reserved before the check, so the frame itself must fit the budget; checked on every
        # frame that brings bytes, since a burst between two timed checks overran it.
        self.space.check(force=self.space.reserve(frame) > 0)
        why = "paused"
        if not self.space.paused:
            try:
                self.out.put_nowait(frame)
                return True
            except queue.Full:
                why = "queue_full"
        self.space.release([frame])
        self._drop(why)
        return False

    def _hand_over(self, frame: Frame) -> bool:
        """A folder frame: wait for room on disk and in the queue; False when stopping."""
        stop = self.ctx.stop
        if not self.space.wait(stop):
            return False
        while True:
            try:
                self.out.put(frame, timeout=0.2)
                return True
            except queue.Full:
                if stop.is_set():
                    return False  # not lost: the folder is rescanned on the next start

    def _drop(self, why: str) -> None:
        """Count a dropped live frame under its reason; one log line per 100 of each reason."""
        stats = self.ctx.stats
        self.source.dropped += 1
        stats.frames_dropped += 1
        n = stats.frames_dropped_by[why] = stats.frames_dropped_by.get(why, 0) + 1
        if n == 1 or n % 100 == 0:
            because = (
                f"ingest is paused ({stats.paused_reason or 'no room'})" if why == "paused"
                else "the pipeline is full"
            )
            log.warning("%d camera frames dropped so far because %s", n, because)
