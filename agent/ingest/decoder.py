"""Decoding a read frame into the grayscale image the classifier tiles (and locating it on the
ground while its bytes are at hand), and batch sizing."""

from __future__ import annotations

import logging
import time

from agent.core.config import ModelConfig
from agent.core.errors import ImageError
from agent.imaging.decode import decode_image
from agent.ingest.job import Counts, Job, Reject
from agent.ingest.locate import Locator

log = logging.getLogger(__name__)


class Decoder:
    """Decodes ``job.data`` into ``job.image`` (or sets ``job.reject``), then lets the bytes go."""

    def __init__(
        self,
        model: ModelConfig,
        input_px: int,
        camera_timezone: str | None,
        counts: Counts,
        locator: Locator | None = None,
    ):
        self.tile_px = model.tile_px
        self.max_pixels = model.max_pixels
        self.max_decode_bytes = int(model.max_decode_mb * 1024 * 1024)
        self.input_px = input_px
        self.camera_timezone = camera_timezone
        self.counts = counts
        self.locator = locator

    def decode(self, job: Job) -> None:
        t0 = time.perf_counter()
        try:
            job.image = decode_image(
                job.data or b"",
                tile_px=self.tile_px,
                input_px=self.input_px,
                max_pixels=self.max_pixels,
                max_decode_bytes=self.max_decode_bytes,
                camera_timezone=self.camera_timezone,
                sha256=job.sha256,
            )
        except ImageError as exc:
            job.reject = Reject(exc.reason, str(exc))
        except Exception as exc:  # a decoder bug must cost one frame, not the agent
            log.warning("%s: unexpected decoder failure: %r", job.frame.source, exc)
            job.reject = Reject("corrupt", f"decoder failure: {exc!r}")
        job.decode_ms = (time.perf_counter() - t0) * 1000
        self.counts.timings["decode"] += job.decode_ms / 1000
        if self.locator is not None and job.image is not None:
            t1 = time.perf_counter()
            try:
                self.locator.locate(job, job.data or b"")
            except Exception as exc:  # a geometry bug must cost the frame its location, no more
                log.warning("%s: unexpected locator failure: %r", job.frame.source, exc)
                job.warnings.append({"reason": "locate_failed", "message": repr(exc)})
            job.locate_ms = (time.perf_counter() - t1) * 1000
            self.counts.timings["locate"] += job.locate_ms / 1000
        if not job.camera:
            job.data = None  # the camera JPEG is still to be saved; file bytes are done with


class BatchSizer:
    """How many frames the next batch takes: large frames make small batches, tiles large ones."""

    #: decoded pixels per batch. 6 MP is 8 12-MP frames decoded at 1/4 (their file bytes,
    #: ~3.5 MB each, are held until decoded): with 24 MP the agent peaked at 400-600 MB RSS on
    #: 12 MP JPEGs (skysift bench).
    BATCH_PIXELS = 6_000_000
    #: and never more frames than this: what is in flight at SIGTERM must finish in a moment
    MAX_BATCH_FRAMES = 64
    #: The first batch is small: its frames' size is not known yet, and 64 camera JPEGs read
    #: at once hold ~220 MB of file bytes (and delay the first result by seconds).
    FIRST_BATCH_FRAMES = 8

    def __init__(self) -> None:
        self.frames = self.FIRST_BATCH_FRAMES

    def update(self, decoded: list[Job]) -> None:
        """Size the next batch from the decoded pixels per frame of this one."""
        images = [j.image for j in decoded if j.image is not None]
        if not images:
            return
        per_frame = max(1, sum(img.gray.size for img in images) // len(images))
        self.frames = max(1, min(self.MAX_BATCH_FRAMES, self.BATCH_PIXELS // per_frame))
