"""An OpenCV camera: a device index, a video file, or an RTSP/HTTP stream.

A camera run is one flight, ``cam-<UTC start time>``. Frames are sampled (every Nth frame
and/or at most N per second; for a video file the second is video time, not wall time) and
JPEG-encoded here; the pipeline saves the JPEG under ``<storage.dir>/frames/<flight_id>/``
when it commits the frame, so a frame dropped because the pipeline is full leaves no file.

A live stream that stops delivering is released and reopened with the agent's one retry helper,
:class:`agent.core.backoff.Backoff` (capped exponential with full jitter, cap
``source.camera_reopen_max_s``; one "link down" line, rare reminders, one "recovered" line).
A video file ends at its last frame.

A stream URL may carry a password (``rtsp://admin:s3cret@host/...``): the capture is opened
with the URL as given, while frames, flights and log lines carry :attr:`CameraSource.display`,
the URL through :func:`agent.core.redact.redact_url` (``rtsp://admin:***@host/...``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from agent.core.backoff import Backoff
from agent.core.redact import redact_url
from agent.imaging.geotag import iso_utc
from drivers.base import Frame, FrameSource, SourceError

log = logging.getLogger(__name__)

CaptureFactory = Callable[[Any], Any]  # returns a cv2.VideoCapture-like object


def parse_camera_spec(spec: str | int) -> tuple[str, Any]:
    """Return (kind, value): ``('device', 0)``, ``('stream', url)`` or ``('file', path)``."""
    if isinstance(spec, int):
        return "device", spec
    text = str(spec).strip()
    if text.isdigit():
        return "device", int(text)
    if "://" in text:
        return "stream", text
    if text.startswith("/dev/video"):
        return "device", text
    return "file", text


def _default_factory(value: Any) -> Any:
    import cv2  # heavy import kept in the backend that needs it

    return cv2.VideoCapture(value)


class CameraSource(FrameSource):
    kind = "camera"
    lossy = True

    def __init__(
        self,
        spec: str | int,
        *,
        every_n: int = 1,
        max_fps: float | None = None,
        reopen_max_s: float = 30.0,
        jpeg_quality: int = 92,
        clock_offset_s: float = 0.0,
        capture_factory: CaptureFactory | None = None,
        flight_id: str | None = None,
    ):
        super().__init__()
        self.spec = spec  # as configured, secrets included: never logged (display is)
        self.kind_of, self.value = parse_camera_spec(spec)
        self.display = redact_url(str(spec))  # what logs and stored rows show
        self.every_n = max(1, int(every_n))
        self.max_fps = max_fps
        self.reopen_max_s = float(reopen_max_s)
        self.jpeg_quality = int(jpeg_quality)
        self.clock_offset_s = clock_offset_s
        self._factory = capture_factory or _default_factory
        self._cap: Any = None
        self.started = datetime.now(timezone.utc)
        self.flight_id = flight_id or "cam-" + self.started.strftime("%Y%m%dT%H%M%SZ")
        self.reopens = 0
        self.read_failures = 0
        # Jitter: many drones on one radio link do not all retry in step.
        self._backoff = Backoff(f"camera {self.display}", base_s=1.0, cap_s=self.reopen_max_s)
        self._video_start: datetime | None = None

    @property
    def source_name(self) -> str:
        return self.display

    def open(self) -> None:
        if self.kind_of == "file" and not Path(self.value).is_file():
            raise SourceError(f"source.camera: video file {self.value} does not exist")
        self._cap = self._factory(self.value)
        if self._cap is not None and self._cap.isOpened():
            self._on_opened()
            return
        if self.kind_of == "file":
            raise SourceError(f"source.camera: OpenCV cannot open the video file {self.value}")
        # A live camera or stream may come up after the agent (boot order, radio link): keep
        # trying in frames() rather than failing the service.
        log.warning("camera %s is not available yet; retrying with backoff", self.display)

    def _on_opened(self) -> None:
        if self.kind_of != "file":
            return
        # The recording's start, by the camera clock: the file's mtime is when it was closed.
        import cv2

        n = self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0
        fps = self._cap.get(cv2.CAP_PROP_FPS) or 0
        duration = n / fps if n > 0 and fps > 0 else 0.0
        mtime = datetime.fromtimestamp(os.path.getmtime(self.value), tz=timezone.utc)
        self._video_start = mtime - timedelta(seconds=duration) + timedelta(seconds=self.clock_offset_s)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def flights(self) -> list[str]:
        return [self.flight_id]

    def _reopen(self, stop: threading.Event, error: str) -> bool:
        """Release the stream, wait out the backoff and open it again; True when it is open."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._backoff.failure(error)
        if not self._backoff.wait(stop):
            return False
        self._cap = self._factory(self.value)
        self.reopens += 1
        return self._cap is not None and self._cap.isOpened()

    def frames(self, stop: threading.Event, once: bool = False) -> Iterator[Frame]:
        import cv2

        index = -1
        last_kept: float | None = None
        while not stop.is_set():
            if self._cap is None or not self._cap.isOpened():
                if self.kind_of == "file":
                    return
                if not self._reopen(stop, "the stream cannot be opened"):
                    continue
            ok, img = self._cap.read()
            if not ok or img is None:
                if self.kind_of == "file":
                    log.info("video %s ended after %d frames", self.value, index + 1)
                    return
                self.read_failures += 1
                self._reopen(stop, "the stream delivers no frame")
                continue
            self._backoff.success()
            index += 1
            if index % self.every_n:
                continue
            if self.kind_of == "file":
                t = (self._cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
                when = self._video_start + timedelta(seconds=t) if self._video_start else None
            else:
                t = time.monotonic()
                when = datetime.now(timezone.utc)
            if self.max_fps and last_kept is not None and t - last_kept < 1.0 / self.max_fps - 1e-6:
                continue
            last_kept = t
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                log.warning("camera %s: frame %d could not be encoded", self.display, index)
                continue
            yield Frame(
                flight_id=self.flight_id,
                source=self.source_name,
                path=None,
                data=buf.tobytes(),
                captured_at=iso_utc(when) if when else None,
                meta={"frame_index": index, "camera": True},
            )
