"""Ground geometry for damage maps: where a frame and its damaged tiles lie on the ground.

Assumptions, stated once because every polygon in a report depends on them:

- The camera points straight down (nadir) and the ground is flat.
- ``alt`` is the camera's height above that ground, in metres. (EXIF GPS altitude is above sea
  level; a drone's relative altitude or a track measured above the launch point is what fits.)
- The heading is unknown, so the footprint is aligned north-up: the top edge of the image faces
  north. A row that carries a ``heading`` (degrees clockwise from north) is rotated by it.
- Positions are projected with a local equirectangular projection around a reference point:
  metres east = R * dlon * cos(lat0), metres north = R * dlat. Over the few kilometres of a
  flight the error is far below the GPS error.
- When only one field of view is configured, the other follows from the frame's aspect ratio
  (square pixels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)


@lru_cache(maxsize=1)
def tile_threshold() -> float:
    """The p(damaged) cut from which the shipped model calls a tile damaged: its card's
    threshold (tuned out of fold in training), for callers that name no model."""
    from models.card import load_card

    return load_card().p_damaged_threshold


def valid_position(lat: float | None, lon: float | None) -> str | None:
    """Return None when (lat, lon) is a usable position, else why it is not.

    (0, 0) is refused: it is what GPS receivers and EXIF writers store when they have no fix,
    and a frame plotted in the Gulf of Guinea would stretch the map across the globe.
    """
    if lat is None or lon is None:
        return "no position"
    try:
        lat, lon = float(lat), float(lon)
    except (TypeError, ValueError):
        return "invalid position"
    if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
        return "invalid position"
    if lat == 0.0 and lon == 0.0:
        return "position 0,0 (no GPS fix)"
    return None


@dataclass(frozen=True)
class LocalProjection:
    """Equirectangular projection around (lat0, lon0): metres east (x) and north (y)."""

    lat0: float
    lon0: float

    @property
    def _kx(self) -> float:
        return EARTH_RADIUS_M * math.radians(1.0) * math.cos(math.radians(self.lat0))

    @property
    def _ky(self) -> float:
        return EARTH_RADIUS_M * math.radians(1.0)

    def to_xy(self, lat: float, lon: float) -> tuple[float, float]:
        return (lon - self.lon0) * self._kx, (lat - self.lat0) * self._ky

    def to_lonlat(self, x: float, y: float) -> tuple[float, float]:
        return self.lon0 + x / self._kx, self.lat0 + y / self._ky

    @classmethod
    def around(cls, points: Sequence[tuple[float, float]]) -> LocalProjection:
        """A projection centred on the middle of the (lat, lon) bounding box."""
        lats = [p[0] for p in points]
        lons = [p[1] for p in points]
        if not points:
            return cls(0.0, 0.0)
        return cls((min(lats) + max(lats)) / 2, (min(lons) + max(lons)) / 2)


def ground_size(
    alt: float | None,
    width: int | None,
    height: int | None,
    hfov_deg: float | None,
    vfov_deg: float | None,
) -> tuple[float, float] | None:
    """Ground width and height (metres) seen by a nadir camera at ``alt`` m, or None if unknown."""
    if alt is None or not math.isfinite(alt) or alt <= 0 or not width or not height:
        return None
    if hfov_deg is None and vfov_deg is None:
        return None
    if hfov_deg is not None:
        th = math.tan(math.radians(hfov_deg) / 2)
        tv = math.tan(math.radians(vfov_deg) / 2) if vfov_deg is not None else th * height / width
    else:
        tv = math.tan(math.radians(vfov_deg) / 2)  # type: ignore[arg-type]
        th = tv * width / height
    return 2 * alt * th, 2 * alt * tv


def _rotate(x: float, y: float, heading_deg: float) -> tuple[float, float]:
    # Heading is clockwise from north; image "up" turns from north towards east.
    a = math.radians(heading_deg)
    return x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)


def damaged_tile_boxes(
    row: dict, threshold: float | None = None
) -> list[tuple[int, int, float, tuple[int, int, int, int]]]:
    """(row, col, p_damaged, (x0, y0, x1, y1)) in original-frame pixels for each tile whose
    p_damaged reaches ``threshold`` (the model card's p(damaged) cut; default the shipped
    card's, :func:`tile_threshold`). The card decides a p_undamaged model's tile strictly above
    the cut; the stored p has 5 decimals, so only a tile exactly on it could differ.

    Tiles are placed exactly as the classifier cut them (:func:`models.frame.tile_starts`: the
    last row and column are shifted inward to end at the image edge).
    """
    from models.frame import tile_starts

    width, height = row.get("width"), row.get("height")
    tile_px = row.get("tile_px") or 0
    grid = row.get("tile_grid")
    if not (width and height and tile_px > 0 and isinstance(grid, list)):
        return []
    cut = tile_threshold() if threshold is None else threshold
    ys, xs = tile_starts(height, tile_px), tile_starts(width, tile_px)
    th, tw = min(tile_px, height), min(tile_px, width)
    out = []
    for r, cells in enumerate(grid[: len(ys)]):
        for c, p in enumerate((cells or [])[: len(xs)]):
            if p is not None and p >= cut:
                out.append((r, c, float(p), (xs[c], ys[r], xs[c] + tw, ys[r] + th)))
    return out


@dataclass(frozen=True)
class Footprint:
    """A frame's ground footprint and its damaged tiles, as local x/y metre rings (closed).

    Every ring runs from the image's bottom-left corner: BL, BR, TR, TL, BL. Seen from above a
    camera's image is never mirrored, so that is counter-clockwise on the ground (RFC 7946).
    """

    outline: list[tuple[float, float]]
    #: (row, col, p_damaged, ring) per damaged tile
    damaged_tiles: list[tuple[int, int, float, list[tuple[float, float]]]]
    ground_w: float
    ground_h: float
    #: where each damaged tile lies (its centre), for the heat map; tiles without a ring included
    damaged_centres: list[tuple[float, float]] = field(default_factory=list)
    #: "pose": the pipeline's ray-cast geometry; "nadir": assumed here (straight down, flat)
    source: str = "nadir"

    @property
    def image_quad(self) -> list[tuple[float, float]]:
        """The corners in image order (top-left, top-right, bottom-right, bottom-left)."""
        return self.outline[3::-1]


def footprint(
    row: dict,
    center_xy: tuple[float, float],
    hfov_deg: float | None,
    vfov_deg: float | None,
    *,
    threshold: float,
) -> Footprint | None:
    """The nadir, flat-ground footprint of a frame row centred on ``center_xy`` (local metres),
    or None; tiles from ``threshold`` on are damaged. The fallback for rows without the
    pipeline's own ground geometry (:mod:`agent.report.ground`)."""
    width, height = row.get("width"), row.get("height")
    size = ground_size(row.get("alt"), width, height, hfov_deg, vfov_deg)
    if size is None:
        return None
    gw, gh = size
    heading = row.get("heading")
    cx, cy = center_xy

    def px_to_xy(px: float, py: float) -> tuple[float, float]:
        # Image x grows to the east, image y grows to the south (north-up footprint).
        dx = (px / width - 0.5) * gw
        dy = (0.5 - py / height) * gh
        if heading:
            dx, dy = _rotate(dx, dy, float(heading))
        return cx + dx, cy + dy

    def rect(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
        # Counter-clockwise on the ground (RFC 7946 exterior rings): SW, SE, NE, NW, SW.
        ring = [px_to_xy(x0, y1), px_to_xy(x1, y1), px_to_xy(x1, y0), px_to_xy(x0, y0)]
        return [*ring, ring[0]]

    tiles = [(r, c, p, rect(x0, y0, x1, y1)) for r, c, p, (x0, y0, x1, y1) in damaged_tile_boxes(row, threshold)]
    centres = [ring_centre(ring) for _, _, _, ring in tiles]
    return Footprint(rect(0, 0, width, height), tiles, gw, gh, centres)


def ring_centre(ring: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The mean of a closed four-corner ring's corners."""
    return sum(p[0] for p in ring[:4]) / 4, sum(p[1] for p in ring[:4]) / 4
