"""An optional basemap for the damage map, read from the user's own MBTiles file (never the network).

MBTiles (https://github.com/mapbox/mbtiles-spec) is one SQLite file: a ``metadata`` table of
name/value pairs (``format``: png or jpg, ``minzoom``, ``maxzoom``, ``bounds``) and a ``tiles``
table (``zoom_level, tile_column, tile_row, tile_data``) of Web Mercator tiles. Rows are numbered
TMS-style, from the south: XYZ row y is stored as ``2**zoom - 1 - y``.

The page embeds the tiles as ``data:`` URIs, so :func:`read_basemap` picks the most detailed zoom
level whose tiles over the flights' extent fit a byte budget: a field laptop opens the file in
seconds, and the basemap never outweighs the frames themselves.
"""

from __future__ import annotations

import base64
import logging
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from agent.report.data import ReportError

log = logging.getLogger(__name__)

#: the most tile bytes one page embeds (before base64)
MAX_BASEMAP_BYTES = 8 * 1024 * 1024
_MIME = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}


class BasemapError(ReportError):
    """``report.basemap`` names a file that is not a readable raster MBTiles file."""


@dataclass(frozen=True)
class BasemapTile:
    """One XYZ tile and the lon/lat box it covers."""

    zoom: int
    x: int
    y: int  # XYZ row, from the north (already flipped from the file's TMS row)
    west: float
    south: float
    east: float
    north: float
    data_uri: str


@dataclass(frozen=True)
class Basemap:
    zoom: int
    tiles: list[BasemapTile]
    bytes: int  # tile bytes embedded, before base64
    attribution: str | None


def tile_bounds(zoom: int, x: int, y: int) -> tuple[float, float, float, float]:
    """(west, south, east, north) in degrees of XYZ tile ``x``, ``y`` at ``zoom`` (Web Mercator)."""
    n = 2**zoom

    def lat(row: int) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))

    return x / n * 360 - 180, lat(y + 1), (x + 1) / n * 360 - 180, lat(y)


def tile_xy(zoom: int, lon: float, lat: float) -> tuple[int, int]:
    """The XYZ tile (column, row) holding a lon/lat point at ``zoom``."""
    n = 2**zoom
    lat = max(-85.0511, min(85.0511, lat))  # Web Mercator stops there
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def _metadata(conn: sqlite3.Connection) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in conn.execute("SELECT name, value FROM metadata")}
    except sqlite3.DatabaseError:
        return {}  # the table is optional in practice: the tiles say what they are


def _ranges(zoom: int, bbox: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    west, south, east, north = bbox
    x0, y0 = tile_xy(zoom, west, north)
    x1, y1 = tile_xy(zoom, east, south)
    n = 2**zoom
    return x0, x1, n - 1 - y1, n - 1 - y0  # columns, then TMS rows (flipped: south is low)


def _zoom_bytes(conn: sqlite3.Connection, zoom: int, bbox: tuple[float, float, float, float]) -> tuple[int, int]:
    x0, x1, r0, r1 = _ranges(zoom, bbox)
    n, size = conn.execute(
        "SELECT count(*), coalesce(sum(length(tile_data)), 0) FROM tiles WHERE zoom_level = ? "
        "AND tile_column BETWEEN ? AND ? AND tile_row BETWEEN ? AND ?",
        (zoom, x0, x1, r0, r1),
    ).fetchone()
    return int(n), int(size)


def read_basemap(
    path: Path, bbox: tuple[float, float, float, float], max_bytes: int = MAX_BASEMAP_BYTES
) -> Basemap | None:
    """The tiles of ``path`` covering ``bbox`` (west, south, east, north), at the most detailed
    zoom whose tiles fit ``max_bytes``; None when no zoom level has tiles there within budget."""
    if not Path(path).is_file():
        raise BasemapError(f"report.basemap: no file at {path}")
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BasemapError(f"report.basemap: cannot open {path}: {exc}") from None
    try:
        meta = _metadata(conn)
        try:
            zooms = [z for (z,) in conn.execute("SELECT DISTINCT zoom_level FROM tiles ORDER BY zoom_level DESC")]
        except sqlite3.DatabaseError as exc:
            raise BasemapError(f"report.basemap: {path} is not an MBTiles file ({exc})") from None
        for zoom in zooms:
            n, size = _zoom_bytes(conn, zoom, bbox)
            if n and size <= max_bytes:
                return _load(conn, zoom, bbox, meta, size)
            if n:
                log.info("basemap zoom %d: %d tiles, %d bytes over the budget of %d", zoom, n, size, max_bytes)
        return None
    finally:
        conn.close()


def _mime(meta: dict[str, str], data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if meta.get("format", "").lower() not in _MIME:
        raise BasemapError(f"report.basemap: raster tiles (png, jpg) needed, not {meta.get('format')!r}")
    return _MIME[meta["format"].lower()]


def _load(conn: sqlite3.Connection, zoom: int, bbox: tuple, meta: dict[str, str], size: int) -> Basemap:
    x0, x1, r0, r1 = _ranges(zoom, bbox)
    tiles = []
    rows = conn.execute(
        "SELECT tile_column, tile_row, tile_data FROM tiles WHERE zoom_level = ? "
        "AND tile_column BETWEEN ? AND ? AND tile_row BETWEEN ? AND ?",
        (zoom, x0, x1, r0, r1),
    )
    for col, tms_row, data in rows:
        data = bytes(data)
        y = 2**zoom - 1 - tms_row
        uri = f"data:{_mime(meta, data)};base64," + base64.b64encode(data).decode("ascii")
        tiles.append(BasemapTile(zoom, col, y, *tile_bounds(zoom, col, y), uri))
    return Basemap(zoom, tiles, size, meta.get("attribution"))
