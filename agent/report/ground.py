"""The pipeline's own ground geometry of a frame (the columns of migration 4), read for a report.

The pipeline ray-casts the camera's pose onto the terrain and stores, per frame:

- ``footprint``: a GeoJSON Polygon dict of [lon, lat], the corners in image order (top-left,
  top-right, bottom-right, bottom-left) and closed;
- ``tile_centers``: rows x cols of [lon, lat], or None where that tile's ray missed the ground;
- ``tile_corners``: (rows + 1) x (cols + 1) of [lon, lat] or None; tile i,j spans the corners
  [i][j], [i][j+1], [i+1][j+1], [i+1][j].

Where these exist the report places a frame and its tiles by them, not by the drone's position
(an oblique camera looks at ground far from the point under the drone). Frames without them keep
the drone-position fallback of :mod:`agent.report.geo`, and :func:`ground_problem` says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from agent.report.geo import Footprint, LocalProjection

LonLat = tuple[float, float]
#: pose_source values that mean the pipeline knew no camera pose (agent.imaging.pose)
NO_POSE = (None, "", "none")


def _lonlat(v: Any) -> LonLat | None:
    """A [lon, lat] pair as a tuple, or None when it is missing or not a position."""
    if not isinstance(v, (list, tuple)) or len(v) < 2:
        return None
    try:
        lon, lat = float(v[0]), float(v[1])
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(lon) and math.isfinite(lat)) or abs(lat) > 90 or abs(lon) > 180:
        return None
    return lon, lat


def _cell(grid: Any, i: int, j: int) -> Any:
    try:
        return grid[i][j]
    except (IndexError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class Ground:
    """A frame's stored ground geometry, in lon/lat."""

    corners: tuple[LonLat, LonLat, LonLat, LonLat]  # image order: TL, TR, BR, BL
    centre: LonLat  # the mean of the tile centres (of the corners when there are none)
    #: (row, col, p_damaged, corners TL TR BR BL or None, centre or None) per damaged tile
    damaged: list[tuple[int, int, float, tuple[LonLat, ...] | None, LonLat | None]]

    def footprint(self, proj: LocalProjection) -> Footprint:
        """The geometry in local metres, as the fallback's :class:`Footprint` (same rings)."""

        def ring(quad: tuple[LonLat, ...]) -> list[tuple[float, float]]:
            tl, tr, br, bl = (proj.to_xy(lat, lon) for lon, lat in quad)
            return [bl, br, tr, tl, bl]

        outline = ring(self.corners)
        tiles = [(r, c, p, ring(q)) for r, c, p, q, _ in self.damaged if q is not None]
        centres = [proj.to_xy(ll[1], ll[0]) for *_, ll in self.damaged if ll is not None]
        bl, br, tr, tl = outline[:4]
        ground_w = (math.dist(tl, tr) + math.dist(bl, br)) / 2
        ground_h = (math.dist(tl, bl) + math.dist(tr, br)) / 2
        return Footprint(outline, tiles, ground_w, ground_h, centres, source="pose")


def _damaged(row: dict[str, Any], threshold: float) -> list:
    grid, centres, corners = row.get("tile_grid"), row.get("tile_centers"), row.get("tile_corners")
    out = []
    for i, cells in enumerate(grid if isinstance(grid, list) else []):
        for j, p in enumerate(cells if isinstance(cells, list) else []):
            if p is None or p < threshold:
                continue
            quad = tuple(_lonlat(_cell(corners, a, b)) for a, b in ((i, j), (i, j + 1), (i + 1, j + 1), (i + 1, j)))
            out.append((i, j, float(p), quad if None not in quad else None, _lonlat(_cell(centres, i, j))))
    return out


def read_ground(row: dict[str, Any], threshold: float) -> Ground | None:
    """The frame's stored ground geometry, or None when the pipeline stored none (or junk).

    Tiles from ``threshold`` (the model card's) on count as damaged.
    """
    fp = row.get("footprint")
    if not isinstance(fp, dict) or fp.get("type") != "Polygon":
        return None
    try:
        ring = fp["coordinates"][0]
    except (KeyError, IndexError, TypeError):
        return None
    corners = [_lonlat(v) for v in ring[:4]] if isinstance(ring, list) else []
    if len(corners) != 4 or None in corners:
        return None
    centres = [ll for cells in (row.get("tile_centers") or []) if isinstance(cells, list)
               for ll in map(_lonlat, cells) if ll is not None]
    pts = centres or corners
    centre = (sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts))
    return Ground(tuple(corners), centre, _damaged(row, threshold))  # type: ignore[arg-type]


def ground_problem(row: dict[str, Any], position_problem: str | None) -> str | None:
    """Why a frame without stored ground geometry cannot be placed on the ground.

    No position, no camera pose, or a pose whose rays reach no ground (a camera at the horizon,
    or terrain outside the elevation model).
    """
    if position_problem is not None:
        return position_problem
    if row.get("pose_source") in NO_POSE:
        return "no pose"
    if row.get("alt_agl") is None and row.get("alt_msl") is None:
        return "no height above ground"
    return "ray missed"
