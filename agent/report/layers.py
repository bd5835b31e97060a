"""The page's ground layers: the frames' own pictures warped onto their footprints (a quick
mosaic), the heat map's damage points, and the optional MBTiles basemap under them.

The mosaic is warped in the browser, not here: each frame travels as one small JPEG in image
space plus its four ground corners, and the page draws it as two triangles, each an affine
canvas transform (a projective warp approximated piecewise). That keeps the page light (no
per-frame metric raster with an alpha channel, which would be a PNG several times the size) and
sharp at every zoom; the error along the diagonal is a few percent of the footprint for an
oblique frame and nil for a nadir one, well inside the GPS and pose errors.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from agent.report.data import ReportData, ReportFrame
from agent.report.images import MOSAIC_MAX_BYTES, MOSAIC_PX, mosaic_image
from agent.report.mbtiles import MAX_BASEMAP_BYTES, read_basemap

log = logging.getLogger(__name__)

BASEMAP_MARGIN_M = 100.0  # basemap beyond the frames' extent, so the flights are seen in context


def _quad(f: ReportFrame) -> list[float]:
    return [round(v, 2) for x, y in f.footprint.image_quad for v in (x, y)]  # type: ignore[union-attr]


def mosaic(
    located: list[ReportFrame],
    worst_first: list[ReportFrame],
    storage_dir: Path | None,
    max_px: int = MOSAIC_PX,
    max_bytes: int = MOSAIC_MAX_BYTES,
) -> dict[str, Any]:
    """Each located frame with a footprint and an image file: its picture and its ground quad
    (image order), damaged frames first until ``max_bytes`` of JPEG are embedded."""
    index = {id(f): i for i, f in enumerate(located)}
    wanted = [f for f in worst_first if id(f) in index and f.footprint is not None]
    seen = {id(f) for f in wanted}
    wanted += [f for f in located if f.footprint is not None and id(f) not in seen]
    frames, used, missing, over = [], 0, 0, 0
    for f in wanted:
        if used >= max_bytes:
            over += 1
            continue
        img = mosaic_image(f.row, storage_dir, max_px)
        if img is None:
            missing += 1
            continue
        uri, size = img
        used += size
        frames.append({"i": index[id(f)], "q": _quad(f), "img": uri})
    if over:
        log.info("mosaic: %d frame images left out over the %d-byte budget", over, max_bytes)
    return {"frames": frames, "bytes": used, "missing": missing, "over_budget": over, "candidates": len(wanted)}


def _damaged_count(row: dict[str, Any], threshold: float) -> tuple[int, int]:
    """(damaged tiles by ``threshold``, tiles) of a row; the label stands in without a grid."""
    grid = row.get("tile_grid")
    cells = [p for r in grid if isinstance(r, list) for p in r] if isinstance(grid, list) else []
    if cells:
        return sum(p is not None and p >= threshold for p in cells), len(cells)
    return (1 if row.get("label") == "damaged" else 0), 1


def heat_points(located: list[ReportFrame], flight_index: dict[str, int], threshold: float) -> dict[str, list]:
    """Damage weights where they lie: each damaged tile at its ground centre (weight 1/tiles)
    where the pipeline placed the tiles, else the frame's share of damaged tiles at its point."""
    out: dict[str, list] = {"x": [], "y": [], "w": [], "f": []}

    def add(x: float, y: float, w: float, f: int) -> None:
        out["x"].append(round(x, 2))
        out["y"].append(round(y, 2))
        out["w"].append(round(w, 4))
        out["f"].append(f)

    for fr in located:
        if fr.row.get("status") != "classified":
            continue
        dmg, n = _damaged_count(fr.row, threshold)
        fl = flight_index[fr.row["flight_id"]]
        if fr.footprint is not None and fr.footprint.source == "pose":
            for x, y in fr.footprint.damaged_centres:
                add(x, y, 1 / n, fl)
        elif dmg:
            add(fr.xy[0], fr.xy[1], dmg / n, fl)  # type: ignore[index]
    return out


def _extent_lonlat(data: ReportData) -> tuple[float, float, float, float] | None:
    xs, ys = [], []
    for f in data.located:
        pts = f.footprint.outline if f.footprint is not None else [f.xy]
        xs += [p[0] for p in pts]
        ys += [p[1] for p in pts]
    if not xs:
        return None
    m = max(BASEMAP_MARGIN_M, 0.1 * max(max(xs) - min(xs), max(ys) - min(ys)))
    west, south = data.projection.to_lonlat(min(xs) - m, min(ys) - m)
    east, north = data.projection.to_lonlat(max(xs) + m, max(ys) + m)
    return west, south, east, north


def basemap(data: ReportData, path: Path | None, max_bytes: int = MAX_BASEMAP_BYTES) -> dict[str, Any]:
    """The basemap tiles as local-metre boxes ``[x_west, y_south, x_east, y_north]``, or a note.

    A tile is drawn as an axis-aligned box: over one tile at the zoom levels that cover a
    flight, Web Mercator's stretch with latitude changes by far less than a pixel.
    """
    if path is None:
        return {"tiles": [], "note": "no basemap (set report.basemap to an .mbtiles file)"}
    bbox = _extent_lonlat(data)
    if bbox is None:
        return {"tiles": [], "note": f"basemap {Path(path).name} not shown: no frame on the map to place it by"}
    bm = read_basemap(path, bbox, max_bytes)
    if bm is None:
        return {"tiles": [], "note": f"basemap {Path(path).name}: no tiles cover these flights within "
                f"{max_bytes // 1_048_576} MB"}
    proj = data.projection
    tiles = []
    for t in bm.tiles:
        (x0, y0), (x1, y1) = proj.to_xy(t.south, t.west), proj.to_xy(t.north, t.east)
        if all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            tiles.append({"b": [round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2)], "img": t.data_uri})
    note = f"basemap {Path(path).name}: zoom {bm.zoom}, {len(tiles)} tiles"
    return {"tiles": tiles, "zoom": bm.zoom, "bytes": bm.bytes, "attribution": bm.attribution, "note": note}
