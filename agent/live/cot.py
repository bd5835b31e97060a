"""Cursor on Target events for ATAK: one damage marker per damaged tile (or frame).

Pure functions of a frame row, so the events can be tested without a TAK server.

- ``uid``: ``skysift-<device_id>-<frame_id>-<row>-<col>`` (``-<frame_id>`` alone for
  ``tak.what: frames``). Stable: an event sent twice (CoT has no acknowledgement, so a restart
  may resend one) replaces the marker instead of adding a second.
- ``type``: ``b-m-p-s-m``, a spot-map marker. Damage is an observation at a place, not a unit:
  an atom type such as ``a-u-G`` would draw an "unknown ground unit" and an ``a-h-*`` type a
  hostile one, claims a damage classifier cannot make.
- ``point``: the tile's ground centre (``tile_centers``), else the frame's position. ``ce``
  (metres) is the radius that holds the whole tile (the centre to its farthest corner) or the
  frame's footprint; the drone's GNSS error is not recorded per frame and is not added. With
  no footprint, and for height (``hae``, ``le``), CoT's "unknown" 9999999.
- ``time``: when the event was built; ``start``: when the frame was taken; ``stale``:
  ``tak.stale_s`` after ``time``, so a marker resent after an outage still shows.
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

with warnings.catch_warnings():
    # pytak warns at import that aiohttp is missing: only its Marti HTTP API needs it, unused here.
    warnings.filterwarnings("ignore", message=".*aiohttp.*", category=UserWarning)
    import pytak

#: CoT's value for an unknown ce, le or hae
UNKNOWN = 9999999.0
COT_TYPE = "b-m-p-s-m"
#: machine-made, from the drone's GPS position
HOW = "m-g"
#: 7 decimals of a degree: about 1 cm (pytak's default of 4 is about 11 m, a tile's size)
LATLON_DECIMALS = 7
EARTH_RADIUS_M = 6_371_008.8


def cot_time(when: dt.datetime) -> str:
    """A CoT (W3C XML Schema) UTC time."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def distance_m(a: Sequence[float], b: Sequence[float]) -> float:
    """Great-circle distance between two [lon, lat] points, in metres."""
    lon1, lat1, lon2, lat2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _radius(center: Sequence[float], corners: list[Any]) -> float:
    pts = [c for c in corners if c is not None]
    if len(pts) < len(corners) or not pts:
        return UNKNOWN  # a corner off the ground (above the horizon): no honest bound
    return round(max(distance_m(center, p) for p in pts), 1)


def _tile_radius(row: dict[str, Any], r: int, c: int, center: Sequence[float]) -> float:
    grid = row.get("tile_corners")
    try:
        corners = [grid[r][c], grid[r][c + 1], grid[r + 1][c], grid[r + 1][c + 1]]
    except (TypeError, IndexError):
        return UNKNOWN
    return _radius(center, corners)


def _frame_radius(row: dict[str, Any], center: Sequence[float]) -> float:
    footprint = row.get("footprint")
    try:
        ring = footprint["coordinates"][0]
    except (TypeError, KeyError, IndexError):
        return UNKNOWN
    return _radius(center, ring)


def _frame_position(row: dict[str, Any]) -> list[float] | None:
    if row.get("lat") is None or row.get("lon") is None:
        return None
    return [float(row["lon"]), float(row["lat"])]


def _tile_center(row: dict[str, Any], r: int, c: int) -> list[float] | None:
    try:
        center = row["tile_centers"][r][c]
    except (TypeError, KeyError, IndexError):
        return None
    return center


@dataclass(frozen=True)
class Marker:
    """One damage marker: where, how sure, and which frame and tile it comes from."""

    row: dict[str, Any]
    uid: str
    p: float
    #: [lon, lat]
    lonlat: list[float]
    #: metres (UNKNOWN when no honest bound)
    ce: float
    tile: tuple[int, int] | None

    def remarks(self) -> str:
        where = "" if self.tile is None else f" tile={self.tile[0]},{self.tile[1]}"
        return (f"skysift damage p_damaged={self.p:.4f} flight={self.row.get('flight_id')} "
                f"frame={self.row['frame_id']}{where} device={self.row.get('device_id')}")


def markers(row: dict[str, Any], device_id: str, what: str, threshold: float) -> Iterator[Marker]:
    """The damage markers of one frame row (JSON columns decoded). A tile is damaged when its
    p_damaged reaches ``threshold`` (the model card's); a frame when its label is ``damaged``
    (the pipeline's verdict, with the card's threshold and ``model.damaged_fraction``).
    Damage that cannot be placed on the ground (no position at all) gives no marker."""
    if row.get("status") != "classified":
        return
    row = dict(row, device_id=device_id)
    base = f"skysift-{device_id}-{row['frame_id']}"
    frame_pos = _frame_position(row)
    if what == "frames":
        if row.get("label") == "damaged" and frame_pos is not None:
            p = float(row.get("p_damaged") or 0.0)
            yield Marker(row, base, p, frame_pos, _frame_radius(row, frame_pos), None)
        return
    for r, cells in enumerate(row.get("tile_grid") or ()):
        for c, p in enumerate(cells):
            if p is None or p < threshold:
                continue
            center = _tile_center(row, r, c)
            if center is not None:
                yield Marker(row, f"{base}-{r}-{c}", p, center, _tile_radius(row, r, c, center), (r, c))
            elif frame_pos is not None:  # tile not placed yet: the frame's position and bound
                yield Marker(row, f"{base}-{r}-{c}", p, frame_pos, _frame_radius(row, frame_pos), (r, c))


def _start(row: dict[str, Any], now: dt.datetime) -> dt.datetime:
    for key in ("captured_at", "classified_at"):
        try:
            when = dt.datetime.fromisoformat(str(row[key]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            continue
        return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    return now


def event_xml(m: Marker, callsign: str, stale_s: float, now: dt.datetime) -> bytes:
    """The CoT event of one marker, as the bytes sent (XML declaration included)."""
    point = pytak.cot_point(lat=m.lonlat[1], lon=m.lonlat[0], ce=m.ce, hae=UNKNOWN, le=UNKNOWN,
                            precision=LATLON_DECIMALS)
    detail = pytak.cot_detail(flow_tag=False)
    pytak.add_remarks(detail, [m.remarks()])
    label = f"{callsign} damage {m.p:.0%}"
    event = pytak.cot_event(uid=m.uid, cot_type=COT_TYPE, how=HOW, point=point, detail=detail,
                            callsign=label, stale=stale_s)
    event.set("time", cot_time(now))
    event.set("start", cot_time(_start(m.row, now)))
    event.set("stale", cot_time(now + dt.timedelta(seconds=stale_s)))
    return pytak.serialize_cot(event)

