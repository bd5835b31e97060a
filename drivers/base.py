"""The FrameSource interface: where frames come from.

A source yields :class:`Frame` objects; the agent's pipeline turns them into committed rows.
Sources know nothing about models or the database.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent.core.errors import SkysiftError


class SourceError(SkysiftError):
    """A source cannot be opened (missing folder, camera that never answers)."""


@dataclass
class Frame:
    """One image to classify.

    Folder frames carry ``path`` (the file, complete and settled); camera frames carry ``path``
    too, the JPEG the camera driver saved under the data directory, since they have no other file.
    ``data`` may hold the already-read bytes to avoid a second read.
    """

    flight_id: str
    source: str  # the file path or stream URL it came from, as shown and stored (password masked)
    path: Path | None = None
    data: bytes | None = None
    captured_at: str | None = None  # ISO 8601 UTC, when the source knows it (camera clock)
    meta: dict = field(default_factory=dict)


class FrameSource(ABC):
    """A producer of frames.

    ``lossy`` says what the pipeline does when it cannot keep up: a lossy source (a live camera)
    has frames dropped and counted; a lossless one (a folder, which can be rescanned) waits.
    """

    kind: str = "abstract"
    lossy: bool = False

    def __init__(self) -> None:
        self.dropped = 0  # frames dropped because the pipeline was full (lossy sources only)

    @abstractmethod
    def open(self) -> None:
        """Acquire the source; raise :class:`SourceError` with a clear message if impossible."""

    @abstractmethod
    def frames(self, stop: threading.Event, once: bool = False) -> Iterator[Frame]:
        """Yield frames until ``stop`` is set. With ``once``, yield what is available now, then
        return (a folder: every settled file; a camera file: until its end)."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release the source."""

    def flights(self) -> list[str]:
        """Flights this source has produced frames for since it opened."""
        return []
