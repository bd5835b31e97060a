"""Which frames' images are owed to the cloud under ``sync.upload_images``.

The sync loop uploads them and the storage budget must not delete them before it has: both ask
here, so the two can never disagree about which images are still needed.
"""

from __future__ import annotations

from typing import Any

from agent.core.config import Config

#: SQL conditions (frames aliased ``f``) for the two image passes: damaged images go first.
DAMAGED_SQL = "f.status = 'classified' AND f.label = 'damaged'"
REST_SQL = "f.status = 'classified' AND (f.label IS NULL OR f.label != 'damaged')"



def wants_image(cfg: Config, frame: dict[str, Any]) -> bool:
    """Whether this frame's image is to be uploaded under ``sync.upload_images``."""
    if not cfg.sync.gcs.bucket or cfg.sync.upload_images == "none":
        return False
    if frame.get("status") != "classified":
        return False  # rejected files are not images a user wants in the cloud
    return cfg.sync.upload_images == "all" or frame.get("label") == "damaged"
