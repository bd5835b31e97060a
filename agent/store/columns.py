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
    # where on the ground (migration 4)
    "alt_agl",
    "alt_msl",
    "agl_source",
    "yaw",
    "pitch",
    "roll",
    "pose_source",
    "footprint",
    "tile_centers",
    "tile_corners",
    # decoder and geometry oddities of a frame still classified (migration 5)
    "warnings",
)

#: the columns stored as JSON text and decoded to Python values when read
JSON_COLUMNS: frozenset[str] = frozenset(
    {"tile_grid", "footprint", "tile_centers", "tile_corners", "warnings"}
)


def frame_columns(*names: str) -> tuple[str, ...]:
    """A view's choice of frame columns (a table, a message), checked against the one list.

    A misspelt or dropped column then fails where the view is defined, at import, instead of
    showing up as a column that is always empty.
    """
    unknown = [n for n in names if n not in FRAME_COLUMNS]
    if unknown:
        raise ValueError(f"not columns of the frames table: {unknown}")
    return names
