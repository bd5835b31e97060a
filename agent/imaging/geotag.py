"""Where and when a frame was taken.

Order of trust for the position: the file's own EXIF GPS (``geo_source='exif'``); else the
position in its XMP packet (``'xmp'``, a drone's own record); else a track
(a GPX or CSV file, or a drone's DJI ``.SRT`` flight log found beside the frames, see
:mod:`agent.imaging.srt`) interpolated at the frame's capture time (``'track'``); else a live telemetry source such as the
MQTT subscriber registered as ``ctx.telemetry`` (``'telemetry'``); else none. A source may also
know the height above ground and the heading (:func:`telemetry_at`), whatever gave the position.

Capture time (``captured_at``): EXIF DateTimeOriginal (read in ``geotag.camera_timezone``), else
the time the agent grabbed a live camera frame, else the file's modification time. Times that
come from the camera's own clock (EXIF, file mtime, a video file) get ``geotag.clock_offset_s``
added; the agent's clock (live camera grabs) is taken as it is.
"""

from __future__ import annotations

import bisect
import csv
import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from agent.core.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Position:
    lat: float
    lon: float
    alt: float | None  # metres above mean sea level
    time: datetime  # UTC
    #: metres above the take-off point (a drone's barometer), where the source has it
    rel_alt: float | None = None
    agl: float | None = None  # metres above ground, when the source measures it
    heading: float | None = None  # degrees clockwise from true north


@runtime_checkable
class PositionSource(Protocol):
    """Anything that knows where the vehicle was at a given time.

    ``position_at`` returns ``None`` when it does not know (outside its data, too old, a gap).
    A source may set ``geo_source`` (``'track'``, ``'telemetry'``); the default is telemetry.
    """

    def position_at(self, when: datetime) -> Position | None: ...


def parse_time(value: str | float | int | None) -> datetime | None:
    """Parse an ISO 8601 time (``Z``, an offset, or naive meaning UTC) or epoch seconds."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    text = str(value).strip()
    if not text:
        return None
    try:
        return datetime.fromtimestamp(float(text), tz=timezone.utc)
    except ValueError:
        pass
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def iso_utc(dt: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a Z, as stored in the database."""
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shift(captured_at: str | None, offset_s: float) -> str | None:
    """Add ``offset_s`` seconds to an ISO time string (``None`` stays ``None``)."""
    if captured_at is None or not offset_s:
        return captured_at
    dt = parse_time(captured_at)
    return iso_utc(dt + timedelta(seconds=offset_s)) if dt else captured_at


class Track:
    """Timed positions, interpolated by time.

    Times before the first or after the last point get no position, and so do times falling in
    a gap between two points longer than ``max_gap_s``: a straight line across a long gap (the
    receiver lost its fix, the logger was paused) would put the frame somewhere it never was.
    """

    geo_source = "track"

    def __init__(self, points: list[Position], max_gap_s: float = 30.0):
        if not points:
            raise ValueError("a track needs at least one point")
        self.max_gap_s = float(max_gap_s)
        self.points = sorted(points, key=lambda p: p.time)
        self._times = [p.time.timestamp() for p in self.points]

    @property
    def start(self) -> datetime:
        return self.points[0].time

    @property
    def end(self) -> datetime:
        return self.points[-1].time

    def covers(self, when: datetime) -> bool:
        """Whether ``when`` lies between the first and the last point."""
        return self._times[0] <= when.timestamp() <= self._times[-1]

    def position_at(self, when: datetime) -> Position | None:
        t = when.timestamp()
        times = self._times
        if t < times[0] or t > times[-1]:
            return None
        i = bisect.bisect_left(times, t)
        if times[i] == t:
            return self.points[i]
        a, b = self.points[i - 1], self.points[i]
        span = times[i] - times[i - 1]
        if span > self.max_gap_s:
            return None
        f = (t - times[i - 1]) / span if span > 0 else 0.0
        dlon = b.lon - a.lon
        if abs(dlon) > 180:  # the short way across the antimeridian
            dlon -= math.copysign(360.0, dlon)
        lon = a.lon + f * dlon
        lon = (lon + 180.0) % 360.0 - 180.0
        return Position(
            lat=a.lat + f * (b.lat - a.lat), lon=lon, alt=_lerp(a.alt, b.alt, f),
            time=when.astimezone(timezone.utc), rel_alt=_lerp(a.rel_alt, b.rel_alt, f),
        )


def _lerp(a: float | None, b: float | None, f: float) -> float | None:
    return a + f * (b - a) if a is not None and b is not None else None


class TrackFile(Track):
    """A recorded track file (GPX, or CSV with columns ``time,lat,lon[,alt]``): see :class:`Track`."""

    def __init__(self, path: str | Path, max_gap_s: float = 30.0):
        self.path = Path(path)
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise ConfigError(f"geotag.track: cannot read {self.path}: {exc.strerror or exc}") from None
        points = _parse_gpx(text, self.path) if _looks_like_xml(text) else _parse_csv(text, self.path)
        if not points:
            raise ConfigError(f"geotag.track: {self.path} holds no timed points")
        super().__init__(points, max_gap_s)
        log.info(
            "track %s: %d points from %s to %s", self.path, len(points), iso_utc(self.start),
            iso_utc(self.end),
        )


def _looks_like_xml(text: str) -> bool:
    return text.lstrip().startswith("<")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_gpx(text: str, path: Path) -> list[Position]:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ConfigError(f"geotag.track: {path} is not valid GPX: {exc}") from None
    points: list[Position] = []
    for el in root.iter():
        if _local(el.tag) not in ("trkpt", "rtept", "wpt"):
            continue
        fields = {_local(c.tag): (c.text or "").strip() for c in el}
        when = parse_time(fields.get("time"))
        try:
            lat, lon = float(el.attrib["lat"]), float(el.attrib["lon"])
        except (KeyError, ValueError):
            continue
        if when is None:
            continue
        alt = _float_or_none(fields.get("ele"))
        points.append(Position(lat, lon, alt, when))
    return points


_CSV_NAMES = {
    "time": ("time", "timestamp", "datetime", "utc", "gps_time"),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "long", "longitude"),
    "alt": ("alt", "altitude", "ele", "elevation", "height"),
}


def _parse_csv(text: str, path: Path) -> list[Position]:
    rows = list(csv.reader(line for line in text.splitlines() if line.strip() and not line.startswith("#")))
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    cols: dict[str, int] = {}
    for key, names in _CSV_NAMES.items():
        for i, h in enumerate(header):
            if h in names:
                cols[key] = i
                break
    if {"time", "lat", "lon"} <= cols.keys():
        body = rows[1:]
    elif parse_time(rows[0][0]) is not None:  # no header: time,lat,lon[,alt]
        cols = {"time": 0, "lat": 1, "lon": 2, "alt": 3}
        body = rows
    else:
        raise ConfigError(f"geotag.track: {path}: CSV needs columns time,lat,lon[,alt]; header is {rows[0]}")
    points: list[Position] = []
    for n, row in enumerate(body, start=2):
        try:
            when = parse_time(row[cols["time"]])
            lat, lon = float(row[cols["lat"]]), float(row[cols["lon"]])
        except (IndexError, ValueError):
            log.warning("track %s line %d: skipped (unreadable)", path, n)
            continue
        if when is None:
            log.warning("track %s line %d: skipped (bad time)", path, n)
            continue
        alt = _float_or_none(row[cols["alt"]]) if "alt" in cols and cols["alt"] < len(row) else None
        points.append(Position(lat, lon, alt, when))
    return points


def _float_or_none(v: Any) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _positions(captured_at: str | None, sources: list[PositionSource]):
    """(source, position) of each source that knows where the vehicle was at ``captured_at``."""
    when = parse_time(captured_at)
    if when is None:
        return
    for src in sources:
        try:
            pos = src.position_at(when)
        except Exception:
            log.exception("position source %r failed", src)
            continue
        if pos is not None:
            yield src, pos


def geotag(
    exif: Any, captured_at: str | None, sources: list[PositionSource], xmp: Any = None
) -> tuple[float | None, float | None, float | None, str]:
    """Return ``(lat, lon, alt, geo_source)`` for a frame.

    ``exif`` is an :class:`agent.imaging.decode.ExifInfo` (or ``None``), ``xmp`` an
    :class:`agent.imaging.xmp.XmpInfo` (or ``None``); ``sources`` are tried in order at
    ``captured_at`` (ISO UTC). A source that fails is logged and skipped: geotagging never
    costs a frame its classification.
    """
    if exif is not None and getattr(exif, "lat", None) is not None and getattr(exif, "lon", None) is not None:
        return exif.lat, exif.lon, getattr(exif, "alt", None), "exif"
    if xmp is not None and xmp.lat is not None and xmp.lon is not None:
        return xmp.lat, xmp.lon, xmp.alt_msl, "xmp"
    found = next(_positions(captured_at, sources), None)
    if found is None:
        return None, None, None, "none"
    src, pos = found
    return pos.lat, pos.lon, pos.alt, getattr(src, "geo_source", "telemetry")


def telemetry_at(captured_at: str | None, sources: list[PositionSource]) -> Position | None:
    """The first position at ``captured_at`` that carries a height above ground or a heading."""
    for _, pos in _positions(captured_at, sources):
        if pos.agl is not None or pos.heading is not None:
            return pos
    return None
