"""The frames' own pictures for the page: gallery thumbnails and the mosaic's images.

Both are small JPEGs embedded as ``data:`` URIs (the page fetches nothing). A frame whose image
file is gone (synced images may have been deleted to free space) or unreadable simply has none.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

from agent.report.geo import damaged_tile_boxes

log = logging.getLogger(__name__)

THUMB_PX = 224  # gallery thumbnails
MOSAIC_PX = 256  # long side of a mosaic image: enough for a street-level look, ~10 kB each
MOSAIC_QUALITY = 70
#: the most mosaic image bytes one page embeds (before base64): damaged frames go in first
MOSAIC_MAX_BYTES = 16 * 1024 * 1024


def _resolve_image(path: str | None, storage_dir: Path | None) -> Path | None:
    if not path:
        return None
    p = Path(path)
    candidates = [p] if p.is_absolute() else [p, *([storage_dir / p] if storage_dir else [])]
    return next((c for c in candidates if c.is_file()), None)


def _read_scaled(row: dict[str, Any], storage_dir: Path | None, max_px: int):
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
    return img


def _jpeg(img, quality: int) -> bytes | None:
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes() if ok else None


def _uri(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def thumbnail(
    row: dict[str, Any], storage_dir: Path | None = None, max_px: int = THUMB_PX, *, threshold: float
) -> str | None:
    """A small JPEG of the frame as a ``data:`` URI, tiles from ``threshold`` on outlined in red."""
    import cv2

    img = _read_scaled(row, storage_dir, max_px)
    if img is None:
        return None
    # The grid is in pixels of the original (oriented) frame; map it onto the thumbnail.
    h, w = img.shape[:2]
    fw, fh = row.get("width") or w, row.get("height") or h
    sx, sy = w / fw, h / fh
    for _, _, _, (x0, y0, x1, y1) in damaged_tile_boxes({**row, "width": fw, "height": fh}, threshold):
        cv2.rectangle(
            img, (round(x0 * sx), round(y0 * sy)), (round(x1 * sx) - 1, round(y1 * sy) - 1), (40, 40, 230), 2
        )
    data = _jpeg(img, 72)
    return _uri(data) if data else None


def mosaic_image(row: dict[str, Any], storage_dir: Path | None = None, max_px: int = MOSAIC_PX) -> tuple[str, int] | None:
    """The frame's picture for the mosaic, unmarked (the page outlines damaged tiles on the
    ground itself): a ``data:`` URI and its JPEG size, or None when the image is gone."""
    img = _read_scaled(row, storage_dir, max_px)
    data = None if img is None else _jpeg(img, MOSAIC_QUALITY)
    return (_uri(data), len(data)) if data else None
