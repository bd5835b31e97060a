"""DJI ``.SRT`` flight logs: the subtitle file a DJI drone writes beside each video.

Every subtitle block is one telemetry sample, timed by the drone's own clock. Formats seen:

- Mini 3/4, Air 2S/3, Mavic 3 (and Mavic 2 / Air 2, with ``longtitude`` misspelt and one
  ``altitude``)::

    1
    00:00:00,000 --> 00:00:00,033
    <font size="28">FrameCnt: 1, DiffTime: 33ms
    2023-05-01 10:12:13.123
    [iso : 100] [shutter : 1/1000.0] [latitude: 37.7749] [longitude: -122.4194]
    [rel_alt: 50.000 abs_alt: 120.500] </font>

  (Air 2S and Mavic 2 write the time as ``2022-08-07 13:40:40,774,808``: milliseconds, then
  microseconds.)
- Phantom 3/4, Inspire, Matrice: ``HOME(lon,lat) 2017.07.29 15:18:50`` or a bare
  ``2022.06.21 16:06:17`` line, then ``GPS(a,b,c) BAROMETER:50.3``; the Mavic Pro writes
  ``GPS (a, b, c), D 12.3m, H 45.6m``.

The ``GPS(...)`` order differs by model: the Phantoms write longitude first and a satellite
count third (``GPS(131.1660,-25.2088,14)``), the Matrice 300 latitude first and an altitude in
metres third (``GPS(36.6146,-6.1120,0.0M)``). A value beyond +-90 can only be the longitude; else
the ``M`` of the third value tells the two apart.

The times carry no zone: they are the camera's clock, as EXIF DateTimeOriginal is, so they are
read in ``geotag.camera_timezone`` and get ``geotag.clock_offset_s`` like the frames' own times.

Parsing is bounded: files over :data:`MAX_SRT_BYTES` are refused, a block longer than
:data:`MAX_BLOCK_CHARS` is skipped, and every pattern is a flat sequence with no nested
repetition (linear time on any input).
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.imaging.geotag import Position, Track, iso_utc

log = logging.getLogger(__name__)

#: a 30-minute 4K video's log is about 16 MB (30 blocks a second, ~300 bytes each)
MAX_SRT_BYTES = 64 * 1024 * 1024
#: a real block is under 1 KB; anything far longer is not a DJI telemetry block
MAX_BLOCK_CHARS = 4096
#: keep one sample per this many seconds: DJI writes one per video frame (30-60 a second) while
#: its GPS updates ~10 times a second, and interpolation covers the rest; this keeps a long
#: video's track at a few MB
MIN_STEP_S = 0.2

_NUM = r"(-?\d{1,4}(?:\.\d{1,12})?)"
_DATE = re.compile(
    r"(\d{4})[-./](\d{1,2})[-./](\d{1,2})[ T]+(\d{1,2}):(\d{2}):(\d{2})(?:[.,](\d{1,6}))?(?:,(\d{3}))?"
)
_LAT = re.compile(r"\[\s?latitude\s?:\s?" + _NUM)
_LON = re.compile(r"\[\s?longt?itude\s?:\s?" + _NUM)
_ABS_ALT = re.compile(r"(?:abs_alt|\[\s?altitude)\s?:\s?" + _NUM)
_REL_ALT = re.compile(r"(?:rel_alt\s?:\s?|BAROMETER\s?:\s?|\bH\s)" + _NUM)
_GPS = re.compile(r"GPS\s?\(\s?" + _NUM + r"\s?,\s?" + _NUM + r"\s?,\s?" + _NUM + r"(M?)\s?\)")


class SrtError(Exception):
    """An SRT file that cannot be used as a track (unreadable, too large, no timed positions)."""


def parse_srt(text: str, tz: tzinfo = timezone.utc, clock_offset_s: float = 0.0) -> tuple[list[Position], int]:
    """The timed positions of a DJI SRT text, and how many blocks were skipped as unreadable.

    Blocks without a position (no fix yet: DJI writes zeros) are dropped silently; a block
    with a position but no readable time counts as skipped.
    """
    points: list[Position] = []
    skipped = 0
    last_t = float("-inf")
    tail: tuple[datetime, str] | None = None  # the last block thinned out
    for block in re.split(r"\r?\n[ \t]*\r?\n", text):
        if not block.strip():
            continue
        if len(block) > MAX_BLOCK_CHARS:
            skipped += 1
            continue
        when = _time(block, tz, clock_offset_s)
        if when is None:
            skipped += _position(block) is not None
            continue
        if abs(when.timestamp() - last_t) < MIN_STEP_S:
            # Thinned out before its position is even read (most blocks end here), but the
            # last one is kept to end the track.
            tail = (when, block)
            continue
        if _append(points, when, block):
            last_t, tail = when.timestamp(), None
    if tail is not None:
        _append(points, *tail)
    return points, skipped


def _append(points: list[Position], when: datetime, block: str) -> bool:
    where = _position(block)
    if where is None:
        return False
    lat, lon, alt, rel_alt = where
    points.append(Position(lat, lon, alt, when, rel_alt=rel_alt))
    return True


def _position(block: str) -> tuple[float, float, float | None, float | None] | None:
    """(lat, lon, alt msl, rel_alt) of one block, or None without a valid fix."""
    lat_m, lon_m = _LAT.search(block), _LON.search(block)
    if lat_m and lon_m:
        lat, lon = float(lat_m.group(1)), float(lon_m.group(1))
        abs_m = _ABS_ALT.search(block)
        alt = float(abs_m.group(1)) if abs_m else None
    else:
        gps = _GPS.search(block)
        if gps is None:
            return None
        a, b, third, metres = float(gps.group(1)), float(gps.group(2)), float(gps.group(3)), gps.group(4)
        lat_first = abs(b) > 90 or (abs(a) <= 90 and metres == "M")
        lat, lon = (a, b) if lat_first else (b, a)
        # The Matrice writes 0.0M while it has no GPS altitude; a satellite count is no altitude.
        alt = third if metres and third != 0.0 else None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0.0 and lon == 0.0):
        return None  # out of range, or DJI's 0,0 before the first fix
    rel_m = _REL_ALT.search(block)
    return lat, lon, alt, float(rel_m.group(1)) if rel_m else None


def _time(block: str, tz: tzinfo, clock_offset_s: float) -> datetime | None:
    m = _DATE.search(block)
    if m is None:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac = (m.group(7) or "") + (m.group(8) or "")
    micro = int((frac + "000000")[:6]) if frac else 0
    try:
        local = datetime(y, mo, d, h, mi, s, micro, tzinfo=tz)
    except ValueError:  # 2023-13-45: a garbled line
        return None
    return local.astimezone(timezone.utc) + timedelta(seconds=clock_offset_s)


def read_srt(
    path: str | Path, *, tz: tzinfo = timezone.utc, clock_offset_s: float = 0.0, max_gap_s: float = 30.0
) -> Track:
    """The track of the SRT file at ``path``; :class:`SrtError` when it has none to give."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_SRT_BYTES + 1)
    except OSError as exc:
        raise SrtError(f"cannot read {p}: {exc.strerror or exc}") from None
    if len(data) > MAX_SRT_BYTES:
        raise SrtError(f"{p} is larger than {MAX_SRT_BYTES // (1024 * 1024)} MB: not a DJI flight log")
    # errors="replace": one corrupt byte (an SD card error) must not cost the whole log.
    points, skipped = parse_srt(data.decode("utf-8-sig", errors="replace"), tz, clock_offset_s)
    if not points:
        raise SrtError(f"{p} holds no timed positions (not a DJI telemetry log, or no GPS fix)")
    if skipped:
        log.warning("SRT %s: %d unreadable blocks skipped", p, skipped)
    return Track(points, max_gap_s)


class SrtTracks:
    """The SRT flight logs found in the watched folder, as one position source.

    The folder source hands each complete ``.SRT`` file to :meth:`add` (with its flight); the
    pipeline asks :meth:`position_at` for the frames' capture times. Frames are matched to a log
    by time alone (geotagging knows the time, not the folder), so a time covered by the logs of
    two different flights gets no position: two drones flying at once cannot be told apart.
    """

    geo_source = "track"

    def __init__(self, *, camera_timezone: str = "UTC", clock_offset_s: float = 0.0, max_gap_s: float = 30.0):
        self.tz: tzinfo = timezone.utc if camera_timezone == "UTC" else ZoneInfo(camera_timezone)
        self.clock_offset_s = float(clock_offset_s)
        self.max_gap_s = float(max_gap_s)
        # The folder source's thread adds while the commit thread looks up.
        self._lock = threading.Lock()
        self._tracks: dict[str, tuple[str, Track]] = {}  # path -> (flight_id, track)

    def add(self, path: str, flight_id: str) -> bool:
        """Read the SRT at ``path`` as a track of ``flight_id``; False (and a warning) if unusable.

        A file read again (it changed) replaces its earlier track.
        """
        try:
            track = read_srt(path, tz=self.tz, clock_offset_s=self.clock_offset_s, max_gap_s=self.max_gap_s)
        except SrtError as exc:
            log.warning("SRT flight log skipped: %s", exc)
            with self._lock:
                self._tracks.pop(path, None)
            return False
        with self._lock:
            self._tracks[path] = (flight_id, track)
        log.debug(
            "SRT %s (flight %s): %d positions from %s to %s", path, flight_id, len(track.points),
            iso_utc(track.start), iso_utc(track.end),
        )
        return True

    def position_at(self, when: datetime) -> Position | None:
        with self._lock:
            covering = [(fid, t) for fid, t in self._tracks.values() if t.covers(when)]
        if len({fid for fid, _ in covering}) > 1:
            return None
        for _, track in covering:  # one flight: its logs agree (e.g. two cameras' videos at once)
            pos = track.position_at(when)
            if pos is not None:
                return pos
        return None
