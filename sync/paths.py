"""Which images go to GCS and under what name: pure functions, no cloud imports.

``gs://<bucket>/<prefix>/<device_id>/<flight_id>/<frame_id>.<ext>``: the name depends only on
the frame, so a second upload of the same frame targets the same object (and is refused by
``if_generation_match=0``) whatever happened in between.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from agent.core.config import Config
from agent.store.uploads import wants_image

CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "tif": "image/tiff",
    "tiff": "image/tiff",
    "bmp": "image/bmp",
    "webp": "image/webp",
}

def extension(frame: dict[str, Any]) -> str:
    ext = PurePath(frame.get("image_path") or "").suffix.lower().lstrip(".")
    return ext if ext in CONTENT_TYPES else "jpg"


def object_name(cfg: Config, frame: dict[str, Any]) -> str:
    prefix = cfg.sync.gcs.prefix.strip("/")
    parts = [p for p in (prefix, cfg.device_id, frame["flight_id"]) if p]
    return "/".join([*parts, f"{frame['frame_id']}.{extension(frame)}"])


def gcs_uri(cfg: Config, frame: dict[str, Any]) -> str | None:
    if not wants_image(cfg, frame):
        return None
    return f"gs://{cfg.sync.gcs.bucket}/{object_name(cfg, frame)}"
