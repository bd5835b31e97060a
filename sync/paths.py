"""Which images go to GCS and under what name: pure functions, no cloud imports.

``gs://<bucket>/<prefix>/<device_id>/<flight_id>/<frame_id>.<ext>``: the name depends only on
the frame, so a second upload of the same frame targets the same object (and is refused by
``if_generation_match=0``) whatever happened in between.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from agent.config import Config

CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "tif": "image/tiff",
    "tiff": "image/tiff",
    "bmp": "image/bmp",
    "webp": "image/webp",
}

#: SQL conditions (frames aliased ``f``) for the two image passes: damaged images go first.
DAMAGED_SQL = "f.status = 'classified' AND f.label = 'damaged'"
REST_SQL = "f.status = 'classified' AND (f.label IS NULL OR f.label != 'damaged')"


def extension(frame: dict[str, Any]) -> str:
    ext = PurePath(frame.get("image_path") or "").suffix.lower().lstrip(".")
    return ext if ext in CONTENT_TYPES else "jpg"


def object_name(cfg: Config, frame: dict[str, Any]) -> str:
    prefix = cfg.sync.gcs.prefix.strip("/")
    parts = [p for p in (prefix, cfg.device_id, frame["flight_id"]) if p]
    return "/".join([*parts, f"{frame['frame_id']}.{extension(frame)}"])


def wants_image(cfg: Config, frame: dict[str, Any]) -> bool:
    """Whether this frame's image is to be uploaded under ``sync.upload_images``."""
    if not cfg.sync.gcs.bucket or cfg.sync.upload_images == "none":
        return False
    if frame.get("status") != "classified":
        return False  # rejected files are not images a user wants in the cloud
    return cfg.sync.upload_images == "all" or frame.get("label") == "damaged"


def gcs_uri(cfg: Config, frame: dict[str, Any]) -> str | None:
    if not wants_image(cfg, frame):
        return None
    return f"gs://{cfg.sync.gcs.bucket}/{object_name(cfg, frame)}"
