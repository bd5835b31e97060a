"""The self-contained HTML damage map: one file, no network, usable with thousands of frames.

Field laptops have no network, so the page carries everything: the script and style are inline,
thumbnails are ``data:`` URIs, and there is no basemap (no tile server). A Content-Security-Policy
of ``default-src 'none'`` makes the browser refuse any request that a later edit might add.

The frame data goes in as one JSON block in column form (``x: [...], y: [...]``): it is the
smallest encoding and the page draws it on a canvas in a few batched paths, which keeps panning
smooth with tens of thousands of frames. Positions are pre-projected here to local metres
(:class:`agent.report.geo.LocalProjection`), so the page needs no map library.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from pathlib import Path
from typing import Any

from agent.report.data import ReportData, ReportFrame
from agent.report.geo import EARTH_RADIUS_M, damaged_tile_boxes, tile_threshold

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("template.html")
THUMB_PX = 224
STATUS_CODES = {"undamaged": 0, "damaged": 1}  # anything else (rejected, no label): 2


def _resolve_image(path: str | None, storage_dir: Path | None) -> Path | None:
    if not path:
        return None
    p = Path(path)
    candidates = [p] if p.is_absolute() else [p, *([storage_dir / p] if storage_dir else [])]
    return next((c for c in candidates if c.is_file()), None)


def thumbnail(row: dict[str, Any], storage_dir: Path | None = None, max_px: int = THUMB_PX) -> str | None:
    """A small JPEG of the frame as a ``data:`` URI, damaged tiles outlined in red; None if the
    image file is gone (synced images may have been deleted to free space) or unreadable."""
    import cv2  # only the page needs OpenCV

    path = _resolve_image(row.get("image_path"), storage_dir)
    if path is None:
        return None
    # IMREAD_COLOR applies the EXIF orientation, as the classifier did: the tile grid matches.
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        log.warning("cannot read %s for a thumbnail", path)
        return None
    h, w = img.shape[:2]
    scale = min(1.0, max_px / max(h, w))
    if scale < 1.0:
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    # The grid is in pixels of the original (oriented) frame; map it onto the thumbnail.
    fw, fh = row.get("width") or w, row.get("height") or h
    sx, sy = img.shape[1] / fw, img.shape[0] / fh
    for _, _, _, (x0, y0, x1, y1) in damaged_tile_boxes({**row, "width": fw, "height": fh}):
        cv2.rectangle(
            img, (round(x0 * sx), round(y0 * sy)), (round(x1 * sx) - 1, round(y1 * sy) - 1), (40, 40, 230), 2
        )
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 72])
    if not ok:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


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
    pts: dict[str, list] = {k: [] for k in ("x", "y", "p", "s", "f", "id", "dt", "n", "t", "lat", "lon", "alt", "g")}
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
        pts["lat"].append(_r(r["lat"], 7))
        pts["lon"].append(_r(r["lon"], 7))
        pts["alt"].append(_r(r.get("alt"), 1))
        pts["g"].append(r.get("geo_source"))
    return pts, index_of


def _footprints(located: list[ReportFrame]) -> list[dict[str, Any]]:
    """Ground outlines (flat x, y lists) of the frames that have one, with their damaged tiles."""
    footprints = []
    for i, f in enumerate(located):
        if f.footprint is None:
            continue
        flat = [round(v, 2) for x, y in f.footprint.outline[:4] for v in (x, y)]
        tiles = [[round(v, 2) for x, y in ring[:4] for v in (x, y)] for _, _, _, ring in f.footprint.damaged_tiles]
        footprints.append({"i": i, "q": flat, "d": tiles})
    return footprints


def _damaged_frames(data: ReportData) -> list[ReportFrame]:
    """Every damaged frame, worst first."""
    damaged = [f for f in data.frames if f.row["status"] == "classified" and f.row.get("label") == "damaged"]
    damaged.sort(key=_damage_rank, reverse=True)
    return damaged


def _top_frame(f: ReportFrame, index_of: dict[str, int], storage_dir: Path | None) -> dict[str, Any]:
    r = f.row
    return {
        "frame_id": r["frame_id"],
        "i": index_of.get(r["frame_id"]),
        "flight": r["flight_id"],
        "p": _r(r.get("p_damaged"), 3),
        "dt": r.get("damaged_tiles"),
        "n": r.get("tiles"),
        "t": r.get("captured_at"),
        "lat": _r(r.get("lat"), 7) if f.located else None,
        "lon": _r(r.get("lon"), 7) if f.located else None,
        "image": r.get("image_path"),
        "thumb": thumbnail(r, storage_dir),
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


def build_payload(data: ReportData, storage_dir: Path | None = None, top: int = 24) -> dict[str, Any]:
    """The JSON the page draws from."""
    flight_index = {fl["flight_id"]: i for i, fl in enumerate(data.flights)}
    located = data.located
    pts, index_of = _points(located, flight_index)
    footprints = _footprints(located)
    damaged = _damaged_frames(data)
    # thumbnails only for the top frames: each costs a decode of a full image and page weight
    top_frames = [_top_frame(f, index_of, storage_dir) for f in damaged[: max(0, top)]]
    # degrees to local metres at the reference latitude, for the page's own projection
    kx = EARTH_RADIUS_M * math.radians(1.0) * math.cos(math.radians(data.projection.lat0))
    ky = EARTH_RADIUS_M * math.radians(1.0)
    return {
        "generated_at": data.generated_at,
        "projection": {"lat0": data.projection.lat0, "lon0": data.projection.lon0, "kx": kx, "ky": ky},
        "camera": {"hfov_deg": data.hfov_deg, "vfov_deg": data.vfov_deg},
        "tile_threshold": tile_threshold(),
        "spacing_m": _r(point_spacing([f.xy for f in located]), 2),
        "flights": data.flight_counts(),
        "frames_total": len(data.frames),
        "points": pts,
        "footprints": footprints,
        "top": top_frames,
        "damaged_total": len(damaged),
        "unlocated": _unlocated(data),
    }


def render_html(data: ReportData, storage_dir: Path | None = None, top: int = 24, title: str | None = None) -> str:
    """The complete page as a string."""
    payload = build_payload(data, storage_dir, top)
    if title is None:
        names = [fl.get("name") or fl["flight_id"] for fl in data.flights]
        title = "Damage map: " + (", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "") if names else "no flights")
    # "</" inside a <script> block would end it; \u003c is the same character to JSON.
    blob = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    page = TEMPLATE.read_text(encoding="utf-8")
    return page.replace("{{TITLE}}", html.escape(title)).replace("{{DATA}}", blob)
