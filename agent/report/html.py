"""The self-contained HTML damage map: one file, no network, usable with thousands of frames.

Field laptops have no network, so the page carries everything: the script and style are inline,
the frames' pictures and the optional basemap (the user's own MBTiles file, :mod:`agent.report
.mbtiles`) are ``data:`` URIs, and no tile server is ever asked. A Content-Security-Policy
of ``default-src 'none'`` makes the browser refuse any request that a later edit might add.

The frame data goes in as one JSON block in column form (``x: [...], y: [...]``): it is the
smallest encoding and the page draws it on a canvas in a few batched paths, which keeps panning
smooth with tens of thousands of frames. Positions are pre-projected here to local metres
(:class:`agent.report.geo.LocalProjection`), so the page needs no map library.
"""

from __future__ import annotations

import html
import json
import logging
import math
from pathlib import Path
from typing import Any

from agent.report import layers
from agent.report.data import ReportData, ReportFrame
from agent.report.geo import EARTH_RADIUS_M
from agent.report.images import MOSAIC_PX, thumbnail

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("template.html")
SCRIPTS = [Path(__file__).with_name("layers.js"), Path(__file__).with_name("map.js")]
LIVE_SCRIPT = Path(__file__).with_name("live.js")
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"
#: the live page may also open /events and load thumbnails from the server that sent it
LIVE_CSP = CSP + " 'self'; connect-src 'self'"
STATUS_CODES = {"undamaged": 0, "damaged": 1}  # anything else (rejected, no label): 2


def _damage_rank(f: ReportFrame) -> tuple:
    r = f.row
    tiles = r.get("tiles") or 0
    share = (r.get("damaged_tiles") or 0) / tiles if tiles else 0.0
    return (r.get("damaged_tiles") or 0, share, r.get("p_damaged") or 0.0)


def _r(v: float | None, nd: int) -> float | None:
    # JSON has no NaN: a non-finite value is shown as unknown.
    return None if v is None or not math.isfinite(float(v)) else round(float(v), nd)


def point_spacing(xy: list[tuple[float, float]], sample: int = 400) -> float | None:
    """Median distance (metres) from a frame to its nearest neighbour: the scale of the survey,
    which sets the heat-map radius. Measured on a sample so that it stays fast for many frames."""
    import numpy as np

    if len(xy) < 2:
        return None
    pts = np.asarray(xy, dtype=np.float64)
    idx = np.random.default_rng(0).choice(len(pts), size=min(sample, len(pts)), replace=False)
    nearest = np.empty(len(idx))
    for i in range(0, len(idx), 16):  # in chunks: 16 x N distances at a time, not sample x N
        chunk = idx[i : i + 16]
        d2 = ((pts[chunk, None, :] - pts[None, :, :]) ** 2).sum(axis=2)
        d2[np.arange(len(chunk)), chunk] = np.inf
        nearest[i : i + len(chunk)] = np.sqrt(d2.min(axis=1))
    nearest = nearest[np.isfinite(nearest) & (nearest > 0)]
    return float(np.median(nearest)) if len(nearest) else None


def _points(located: list[ReportFrame], flight_index: dict[str, int]) -> tuple[dict[str, list], dict[str, int]]:
    """The located frames in column form (one list per field), and each frame id's index in it."""
    keys = ("x", "y", "p", "s", "f", "id", "dt", "n", "t", "lat", "lon", "alt", "g", "w")
    pts: dict[str, list] = {k: [] for k in keys}
    index_of: dict[str, int] = {}
    for i, f in enumerate(located):
        r = f.row
        index_of[r["frame_id"]] = i
        pts["x"].append(round(f.xy[0], 2))
        pts["y"].append(round(f.xy[1], 2))
        pts["p"].append(_r(r.get("p_damaged"), 3))
        pts["s"].append(STATUS_CODES.get(r.get("label") or "", 2) if r["status"] == "classified" else 2)
        pts["f"].append(flight_index[r["flight_id"]])
        pts["id"].append(r["frame_id"])
        pts["dt"].append(r.get("damaged_tiles"))
        pts["n"].append(r.get("tiles"))
        pts["t"].append(r.get("captured_at"))
        lon, lat = f.lonlat  # type: ignore[misc]
        pts["lat"].append(_r(lat, 7))
        pts["lon"].append(_r(lon, 7))
        pts["alt"].append(_r(r.get("alt"), 1))
        pts["g"].append(r.get("geo_source"))
        pts["w"].append(f.ground_problem)  # why it is drawn at the drone's position (None: on the ground)
    return pts, index_of


def _footprints(located: list[ReportFrame]) -> list[dict[str, Any]]:
    """Ground outlines (flat x, y lists) of the frames that have one, with their damaged tiles."""
    footprints = []
    for i, f in enumerate(located):
        if f.footprint is None:
            continue
        flat = [round(v, 2) for x, y in f.footprint.outline[:4] for v in (x, y)]
        tiles = [[round(v, 2) for x, y in ring[:4] for v in (x, y)] for _, _, _, ring in f.footprint.damaged_tiles]
        footprints.append({"i": i, "q": flat, "d": tiles, "src": f.footprint.source})
    return footprints


def _damaged_frames(data: ReportData) -> list[ReportFrame]:
    """Every damaged frame, worst first."""
    damaged = [f for f in data.frames if f.row["status"] == "classified" and f.row.get("label") == "damaged"]
    damaged.sort(key=_damage_rank, reverse=True)
    return damaged


def _top_frame(f: ReportFrame, index_of: dict[str, int], storage_dir: Path | None, threshold: float) -> dict[str, Any]:
    r = f.row
    lonlat = f.lonlat
    return {
        "frame_id": r["frame_id"],
        "i": index_of.get(r["frame_id"]),
        "flight": r["flight_id"],
        "p": _r(r.get("p_damaged"), 3),
        "dt": r.get("damaged_tiles"),
        "n": r.get("tiles"),
        "t": r.get("captured_at"),
        "lat": _r(lonlat[1], 7) if lonlat else None,
        "lon": _r(lonlat[0], 7) if lonlat else None,
        "image": r.get("image_path"),
        "thumb": thumbnail(r, storage_dir, threshold=threshold),
    }


def _unlocated(data: ReportData) -> list[dict[str, Any]]:
    """The frames the map cannot place, with why, so the page can list them instead."""
    return [
        {
            "frame_id": f.row["frame_id"],
            "flight": f.row["flight_id"],
            "status": f.row["status"],
            "label": f.row.get("label"),
            "p": _r(f.row.get("p_damaged"), 3),
            "dt": f.row.get("damaged_tiles"),
            "t": f.row.get("captured_at"),
            "problem": f.position_problem,
            "image": f.row.get("image_path"),
        }
        for f in data.unlocated
    ]


def build_payload(
    data: ReportData,
    storage_dir: Path | None = None,
    top: int = 24,
    *,
    basemap_path: Path | None = None,
    mosaic_px: int = MOSAIC_PX,
) -> dict[str, Any]:
    """The JSON the page draws from; ``basemap_path`` is an optional MBTiles file."""
    flight_index = {fl["flight_id"]: i for i, fl in enumerate(data.flights)}
    located = data.located
    pts, index_of = _points(located, flight_index)
    footprints = _footprints(located)
    damaged = _damaged_frames(data)
    # thumbnails only for the top frames: each costs a decode of a full image and page weight
    top_frames = [_top_frame(f, index_of, storage_dir, data.threshold) for f in damaged[: max(0, top)]]
    # degrees to local metres at the reference latitude, for the page's own projection
    kx = EARTH_RADIUS_M * math.radians(1.0) * math.cos(math.radians(data.projection.lat0))
    ky = EARTH_RADIUS_M * math.radians(1.0)
    return {
        "generated_at": data.generated_at,
        "projection": {"lat0": data.projection.lat0, "lon0": data.projection.lon0, "kx": kx, "ky": ky},
        "camera": {"hfov_deg": data.hfov_deg, "vfov_deg": data.vfov_deg},
        "tile_threshold": data.threshold,
        "spacing_m": _r(point_spacing([f.xy for f in located]), 2),
        "flights": data.flight_counts(),
        "frames_total": len(data.frames),
        "points": pts,
        "footprints": footprints,
        "heat": layers.heat_points(located, flight_index, data.threshold),
        "mosaic": layers.mosaic(located, damaged, storage_dir, mosaic_px),
        "basemap": layers.basemap(data, basemap_path),
        "top": top_frames,
        "damaged_total": len(damaged),
        "unlocated": _unlocated(data),
    }


def render_html(
    data: ReportData,
    storage_dir: Path | None = None,
    top: int = 24,
    title: str | None = None,
    *,
    basemap_path: Path | None = None,
    mosaic_px: int = MOSAIC_PX,
) -> str:
    """The complete page as a string."""
    payload = build_payload(data, storage_dir, top, basemap_path=basemap_path, mosaic_px=mosaic_px)
    if title is None:
        names = [fl.get("name") or fl["flight_id"] for fl in data.flights]
        title = "Damage map: " + (", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "") if names else "no flights")
    return page_html(payload, title)


def page_html(payload: dict[str, Any], title: str, *, live: bool = False) -> str:
    """The page around a :func:`build_payload` payload. ``live`` (agent.station) adds the live
    script, which follows the page's own server over Server-Sent Events, and a policy that lets
    the page ask that one server (``'self'``) and nothing else."""
    # "</" inside a <script> block would end it; \u003c is the same character to JSON.
    blob = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    page = TEMPLATE.read_text(encoding="utf-8")
    # one inline script (the CSP allows inline code only): the picture layers, then the map
    script = "".join(p.read_text(encoding="utf-8") for p in SCRIPTS + ([LIVE_SCRIPT] if live else []))
    page = page.replace("{{CSP}}", LIVE_CSP if live else CSP).replace("{{SCRIPT}}", script)
    return page.replace("{{TITLE}}", html.escape(title)).replace("{{DATA}}", blob)
