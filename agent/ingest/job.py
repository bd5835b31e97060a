"""What travels between the ingest stages: one :class:`Job` per frame, and the shared counters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from agent.core.errors import SkysiftError
from agent.imaging.decode import DecodedImage
from drivers.base import Frame
from models.base import FrameResult

if TYPE_CHECKING:
    from agent.ingest.locate import Location

#: the stages whose time is summed in :attr:`Counts.timings` (``skysift bench`` reports them)
STAGES = ("read", "decode", "locate", "classify", "geotag", "commit")


class PipelineError(SkysiftError):
    """The pipeline cannot go on (the classifier fails on every frame, the database is broken)."""


class Reject(NamedTuple):
    """Why a frame is stored as rejected: a short code for the ``reason`` column, and the
    human explanation for the log."""

    reason: str
    message: str


@dataclass(eq=False)  # a job is one frame in flight: compared by identity, never by its pixels
class Job:
    """One frame on its way from the source to its committed row."""

    frame: Frame
    started: float  # perf_counter when its read began (the row's total_ms counts from here)
    frame_id: str = ""
    sha256: str | None = None
    size: int | None = None
    data: bytes | None = None  # the file bytes until decoded (camera frames: until saved)
    image: DecodedImage | None = None
    reject: Reject | None = None
    result: FrameResult | None = None  # set by the classifier stage
    #: changed or vanished while being read: not recorded, the source hands it over again
    changed: bool = False
    #: could not be read (yet): not a frame at all; the source hands it over again in this many s
    retry_in: float | None = None
    #: copies of this content met while it was on its way; recorded as files once it commits
    copies: list[Job] = field(default_factory=list)
    #: where on the ground, set by the locator in the decode step (None: not located)
    location: Location | None = None
    #: why a value of the row is missing or was refused: {reason, message} dicts
    warnings: list[dict[str, Any]] = field(default_factory=list)
    read_ms: float = 0.0
    decode_ms: float = 0.0
    locate_ms: float = 0.0

    @property
    def classifiable(self) -> bool:
        return self.reject is None and self.image is not None

    @property
    def camera(self) -> bool:
        return bool(self.frame.meta.get("camera"))


@dataclass
class Counts:
    """Progress counters of one pipeline, written by its stages (each by one thread)."""

    backlog: int = 0  # frames handed over by the source so far
    handled: int = 0  # frames fully dealt with: committed, or skipped as duplicates
    duplicates: int = 0
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
