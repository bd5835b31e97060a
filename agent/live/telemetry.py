"""Live position telemetry over MQTT, used to geotag frames that carry no EXIF GPS.

A MAVLink bridge (or anything else) publishes JSON positions on ``mqtt.telemetry_topic``::

    {"lat": 37.4219, "lon": -122.084, "alt": 120.5, "time": "2026-11-26T12:00:01.250Z"}

``time`` is ISO 8601 (a naive time is taken as UTC) or Unix seconds (milliseconds are
recognised by their size); without it, the arrival time is used. :class:`TelemetryBuffer` keeps
a short, time-ordered window of fixes and implements the ``PositionSource`` protocol of
:mod:`agent.imaging.geotag`: ``position_at(when)`` interpolates between the fixes around ``when`` and
never uses a fix further than ``max_age_s`` from it (a stale position is worse than none).
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import threading
from datetime import datetime, timezone
from typing import Any

from agent.imaging.geotag import Position

log = logging.getLogger(__name__)

#: the largest telemetry message read; a position is about a hundred bytes
MAX_TELEMETRY_BYTES = 4096


class TelemetryError(ValueError):
    """A telemetry message that cannot be used (not JSON, no lat/lon, out of range)."""


def _parse_time(value: Any, received: datetime) -> datetime:
    if value is None:
        return received
    if isinstance(value, bool):
        raise TelemetryError("time must be ISO 8601 or Unix seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise TelemetryError("time is not finite")
        if seconds > 1e11:  # Unix milliseconds, as many autopilot bridges send
            seconds /= 1000.0
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise TelemetryError(f"time {value!r} is not ISO 8601") from None
        return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
    raise TelemetryError("time must be ISO 8601 or Unix seconds")


def _number(msg: dict, key: str, required: bool) -> float | None:
    v = msg.get(key)
    if v is None:
        if required:
            raise TelemetryError(f"missing {key}")
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise TelemetryError(f"{key} must be a number")
    return float(v)


def parse_position(payload: bytes, received: datetime | None = None) -> Position:
    """Parse one telemetry message; raise :class:`TelemetryError` when it is unusable."""
    received = received or datetime.now(timezone.utc)
    if len(payload) > MAX_TELEMETRY_BYTES:
        raise TelemetryError(f"too large: {len(payload)} bytes (at most {MAX_TELEMETRY_BYTES})")
    try:
        msg = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TelemetryError("not JSON") from None
    if not isinstance(msg, dict):
        raise TelemetryError("not a JSON object")
    lat = _number(msg, "lat", True)
    lon = _number(msg, "lon", True)
    alt = _number(msg, "alt", False)
    assert lat is not None and lon is not None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise TelemetryError(f"position out of range: {lat}, {lon}")
    return Position(lat=lat, lon=lon, alt=alt, time=_parse_time(msg.get("time"), received))


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


class TelemetryBuffer:
    """A thread-safe, time-ordered window of recent positions (a ``PositionSource``).

    ``add`` is called from the MQTT network thread (cheap: a bisect insert); ``position_at``
    from the ingest thread.
    """

    #: what :func:`agent.imaging.geotag.geotag` records as the frame's ``geo_source``
    geo_source = "telemetry"

    def __init__(self, max_age_s: float, max_fixes: int = 3600):
        self.max_age_s = float(max_age_s)
        self.max_fixes = max_fixes
        self._times: list[float] = []
        self._fixes: list[Position] = []
        self._lock = threading.Lock()
        self.received = 0
        self.invalid = 0

    def add(self, pos: Position) -> None:
        t = _utc(pos.time).timestamp()
        with self._lock:
            # Bridges may deliver slightly out of order (QoS 0, several publishers): keep sorted.
            i = bisect.bisect_right(self._times, t)
            self._times.insert(i, t)
            self._fixes.insert(i, pos)
            if len(self._times) > self.max_fixes:
                del self._times[: len(self._times) - self.max_fixes]
                del self._fixes[: len(self._fixes) - self.max_fixes]
            self.received += 1

    def receive(self, topic: str, payload: bytes) -> None:
        """Add one message from ``topic``; a bad one is counted, and logged at the 1st, 10th,
        100th and every 1000th (a broken bridge may send many a second)."""
        try:
            self.add(parse_position(payload))
        except TelemetryError as exc:
            with self._lock:
                self.invalid += 1
                invalid = self.invalid
            if invalid in (1, 10, 100) or invalid % 1000 == 0:
                log.warning("ignoring telemetry on %s: %s (%d so far)", topic, exc, invalid)

    def latest(self) -> Position | None:
        with self._lock:
            return self._fixes[-1] if self._fixes else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._fixes)

    def position_at(self, when: datetime) -> Position | None:
        """The position at ``when``: interpolated between the fixes around it when both are
        within ``max_age_s`` of it, else the nearer one within ``max_age_s``, else None."""
        w = _utc(when)
        t = w.timestamp()
        with self._lock:
            i = bisect.bisect_left(self._times, t)
            before = (self._times[i - 1], self._fixes[i - 1]) if i > 0 else None
            after = (self._times[i], self._fixes[i]) if i < len(self._times) else None
        if after is not None and after[0] == t:
            return after[1]
        ok_before = before is not None and t - before[0] <= self.max_age_s
        ok_after = after is not None and after[0] - t <= self.max_age_s
        if ok_before and ok_after:
            assert before is not None and after is not None
            (t0, p0), (t1, p1) = before, after
            f = (t - t0) / (t1 - t0)
            alt = None if p0.alt is None or p1.alt is None else p0.alt + f * (p1.alt - p0.alt)
            return Position(
                lat=p0.lat + f * (p1.lat - p0.lat),
                lon=_lerp_lon(p0.lon, p1.lon, f),
                alt=alt,
                time=w,
            )
        if ok_before:
            assert before is not None
            return before[1]
        if ok_after:
            assert after is not None
            return after[1]
        return None


def _lerp_lon(a: float, b: float, f: float) -> float:
    # Across the antimeridian (179.9 -> -179.9) go the short way round, not across the globe.
    d = b - a
    if d > 180:
        d -= 360
    elif d < -180:
        d += 360
    lon = a + f * d
    return (lon + 180) % 360 - 180
