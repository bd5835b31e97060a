"""EXIF reading: where and when a frame was taken, and which way up it is.

Every field is optional and broken EXIF never raises: a frame whose EXIF is damaged may still
have perfectly good pixels, so a bad tag costs that tag, never the frame.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

log = logging.getLogger(__name__)
# exifread logs every oddity of broken files at warning level; they are not ours. Set once:
# setLevel clears every logger's cache, which cost ~0.1 ms a frame when done per file.
logging.getLogger("exifread").setLevel(logging.ERROR)


@dataclass
class ExifInfo:
    """What EXIF says about where and when a picture was taken. Every field may be None."""

    lat: float | None = None
    lon: float | None = None
    alt: float | None = None
    captured_at: str | None = None  # ISO 8601 UTC, e.g. 2008-10-22T16:28:39Z
    orientation: int | None = None


def _ratio(v) -> float:
    den = getattr(v, "den", None)
    if den is not None:
        return float(v.num) / float(den) if den else float("nan")
    return float(v)


def _dms(tag, ref) -> float | None:
    if tag is None:
        return None
    values = list(getattr(tag, "values", []) or [])
    if not values:
        return None
    parts = [_ratio(v) for v in values[:3]] + [0.0, 0.0]
    deg = parts[0] + parts[1] / 60.0 + parts[2] / 3600.0
    if not math.isfinite(deg):
        return None
    ref_s = str(getattr(ref, "values", ref) or "").strip().upper()[:1]
    return -deg if ref_s in ("S", "W") else deg


def _exif_time(value: str, offset: str | None, camera_timezone: str) -> str | None:
    value = value.strip().rstrip("\x00")
    try:
        naive = datetime.strptime(value[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    tz = None
    if offset:  # EXIF 2.31 OffsetTimeOriginal "+02:00": better than the configured zone
        try:
            sign = -1 if offset.strip().startswith("-") else 1
            hh, mm = offset.strip().lstrip("+-").split(":")[:2]
            tz = timezone(sign * timedelta(hours=int(hh), minutes=int(mm)))
        except ValueError:
            tz = None
    if tz is None:
        try:
            tz = ZoneInfo(camera_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("unknown geotag.camera_timezone %r: using UTC", camera_timezone)
            tz = timezone.utc
    return naive.replace(tzinfo=tz).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_exif(data: bytes, camera_timezone: str = "UTC") -> ExifInfo:
    """Read GPS position, capture time and orientation. Never raises on broken EXIF.

    GPS latitude/longitude are degrees-minutes-seconds rationals signed by their N/S/E/W refs,
    altitude is signed by GPSAltitudeRef (1 = below sea level). DateTimeOriginal carries no
    zone: it is read in ``camera_timezone`` (or its OffsetTimeOriginal when present).
    """
    info = ExifInfo()
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"eXIf" not in data:
        return info  # EXIF in a PNG lives in an eXIf chunk; scanning the chunks costs more
    try:
        import exifread

        tags = exifread.process_file(io.BytesIO(data), details=False)
    except Exception as exc:  # broken EXIF must never cost the frame
        log.debug("EXIF unreadable: %s", exc)
        return info
    for name, fn in (
        ("lat", lambda: _dms(tags.get("GPS GPSLatitude"), tags.get("GPS GPSLatitudeRef"))),
        ("lon", lambda: _dms(tags.get("GPS GPSLongitude"), tags.get("GPS GPSLongitudeRef"))),
        ("alt", lambda: _alt(tags)),
        ("captured_at", lambda: _captured(tags, camera_timezone)),
        ("orientation", lambda: _orientation(tags)),
    ):
        try:
            setattr(info, name, fn())
        except Exception as exc:
            log.debug("EXIF %s unreadable: %s", name, exc)
    if info.lat is not None and not -90 <= info.lat <= 90:
        info.lat = None
    if info.lon is not None and not -180 <= info.lon <= 180:
        info.lon = None
    if info.lat is None or info.lon is None:
        info.lat = info.lon = None  # half a position is no position
    return info


def _alt(tags) -> float | None:
    tag = tags.get("GPS GPSAltitude")
    if tag is None or not tag.values:
        return None
    alt = _ratio(tag.values[0])
    if not math.isfinite(alt):
        return None
    ref = tags.get("GPS GPSAltitudeRef")
    if ref is not None and ref.values and int(ref.values[0]) == 1:
        alt = -alt
    return alt


def _captured(tags, camera_timezone: str) -> str | None:
    for key in ("EXIF DateTimeOriginal", "EXIF DateTimeDigitized", "Image DateTime"):
        tag = tags.get(key)
        if tag is not None and str(tag.values).strip():
            offset = tags.get("EXIF OffsetTimeOriginal")
            return _exif_time(str(tag.values), str(offset.values) if offset else None, camera_timezone)
    return None


def _orientation(tags) -> int | None:
    tag = tags.get("Image Orientation")
    if tag is None or not tag.values:
        return None
    v = int(tag.values[0])
    return v if 1 <= v <= 8 else None


def apply_orientation(gray: np.ndarray, orientation: int | None) -> np.ndarray:
    """Rotate/flip a decoded array so it is upright (EXIF orientation 1-8)."""
    if orientation in (None, 1):
        return gray
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: a.T,
        6: lambda a: np.rot90(a, -1),  # stored rotated 90 CCW: turn it clockwise
        7: lambda a: a[::-1, ::-1].T,
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(gray)) if op else gray
