"""The columns of the ``frames`` table, in schema order: the one list every row shape derives from.

It matches the table the migrations of :mod:`agent.store.db` create (a test compares it with a
fresh database). The ingest row builder, and later the MQTT, report and BigQuery shapes, take
their keys from here instead of spelling the list out again.
"""

from __future__ import annotations

FRAME_COLUMNS: tuple[str, ...] = (
    "frame_id",
    "flight_id",
    "source",
    "image_path",
    "sha256",
    "bytes",
    "status",
    "reason",
    "label",
    "p_damaged",
    "tiles",
    "damaged_tiles",
    "tile_px",
    "tile_grid",
    "width",
    "height",
    "lat",
    "lon",
    "alt",
    "geo_source",
    "captured_at",
    "classified_at",
    "engine",
    "device",
    "precision",
    "inference_ms",
    "total_ms",
    "run_id",
)
