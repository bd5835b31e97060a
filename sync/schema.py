"""The BigQuery schema of skysift results (documented here; ``skysift sync init`` creates it).

``frames`` (name from ``sync.bigquery.table``): one row per frame, the columns of the local
``frames`` table plus ``device_id``, the run's system fields, ``position`` (GEOGRAPHY point),
``capture_date`` (partitioning: the capture day, else the classification day), ``gcs_uri``
(where the image is or will be, per ``sync.upload_images``) and ``synced_at`` (when the row
entered its outbox batch). Partitioned by ``capture_date``, clustered by ``flight_id``.
The frame's damaged tiles (at its model card's threshold: agent.store.tiles) travel inside its row as the
REPEATED RECORD ``damaged_tile_locations`` {row, col, p_damaged, center, polygon}, so a frame is
one row of one load job however many tiles it has (``UNNEST`` it, as sync/heatmap.sql does).

``flights``: one row per ended flight (a flight reopened and ended again adds a row; the
``flights_latest`` view keeps the last). Partitioned by ``start_date``, clustered by flight.
"""

from __future__ import annotations

import json
import math
from typing import Any

from agent.store.columns import FRAME_COLUMNS
from agent.store.tiles import damaged_cells

#: BigQuery type, mode and description of every local frame column. The column list itself is
#: agent.store.columns.FRAME_COLUMNS: a column added there without an entry here fails at import,
#: not at the first load job.
_LOCAL: dict[str, tuple[str, str, str]] = {
    "frame_id": ("STRING", "REQUIRED", "First 32 hex chars of the image's sha256"),
    "flight_id": ("STRING", "REQUIRED", "Flight (a folder, or a started/ended camera flight)"),
    "source": ("STRING", "NULLABLE", "folder or camera"),
    "image_path": ("STRING", "NULLABLE", "Path of the image on the device"),
    "sha256": ("STRING", "NULLABLE", "sha256 of the image file"),
    "bytes": ("INT64", "NULLABLE", "File size"),
    "status": ("STRING", "REQUIRED", "classified or rejected"),
    "reason": ("STRING", "NULLABLE", "Why a frame was rejected"),
    "label": ("STRING", "NULLABLE", "damaged or undamaged"),
    "p_damaged": ("FLOAT64", "NULLABLE", "Frame probability of damage"),
    "tiles": ("INT64", "NULLABLE", "Tiles classified"),
    "damaged_tiles": ("INT64", "NULLABLE", "Tiles above the threshold"),
    "tile_px": ("INT64", "NULLABLE", "Tile size in original pixels"),
    "tile_grid": ("JSON", "NULLABLE", "Rows of per-tile p_damaged"),
    "width": ("INT64", "NULLABLE", "Original width"),
    "height": ("INT64", "NULLABLE", "Original height"),
    "lat": ("FLOAT64", "NULLABLE", "WGS84 latitude"),
    "lon": ("FLOAT64", "NULLABLE", "WGS84 longitude"),
    "alt": ("FLOAT64", "NULLABLE", "Altitude (m)"),
    "geo_source": ("STRING", "NULLABLE", "exif, track, telemetry or none"),
    "captured_at": ("TIMESTAMP", "NULLABLE", "Capture time (UTC)"),
    "classified_at": ("TIMESTAMP", "REQUIRED", "Classification time (UTC)"),
    "engine": ("STRING", "NULLABLE", "openvino or tensorflow"),
    "device": ("STRING", "NULLABLE", "Inference device"),
    "precision": ("STRING", "NULLABLE", "Effective precision"),
    "inference_ms": ("FLOAT64", "NULLABLE", "Model time for the frame"),
    "total_ms": ("FLOAT64", "NULLABLE", "Decode + tiles + model"),
    "run_id": ("STRING", "NULLABLE", "Agent run that produced the row"),
    "alt_agl": ("FLOAT64", "NULLABLE", "Height above ground (m)"),
    "alt_msl": ("FLOAT64", "NULLABLE", "Altitude above sea level, orthometric (m)"),
    "agl_source": ("STRING", "NULLABLE", "Which rule gave alt_agl"),
    "yaw": ("FLOAT64", "NULLABLE", "Camera yaw, degrees clockwise from true north"),
    "pitch": ("FLOAT64", "NULLABLE", "Camera pitch, -90 straight down"),
    "roll": ("FLOAT64", "NULLABLE", "Camera roll, degrees"),
    "pose_source": ("STRING", "NULLABLE", "gimbal, telemetry or nadir_heading_unknown"),
    "footprint": ("GEOGRAPHY", "NULLABLE", "The frame's ground footprint"),
    "warnings": ("JSON", "NULLABLE", "Oddities of a file that still decoded in full: [{reason, message}]"),
}

#: Local columns BigQuery does not take as they are: the per-tile ground grids travel as the
#: frame row's repeated field of damaged tiles instead.
_NOT_SENT: frozenset[str] = frozenset({"tile_centers", "tile_corners"})

#: The columns only BigQuery has, each placed after the local column it follows.
_ADDED_AFTER: dict[str, list[tuple[str, str, str, str]]] = {
    "flight_id": [
        ("device_id", "STRING", "REQUIRED", "The device that classified the frame (config device_id)"),
    ],
    "image_path": [
        ("gcs_uri", "STRING", "NULLABLE", "gs:// URI of the image when it is uploaded"),
    ],
    "alt": [
        ("position", "GEOGRAPHY", "NULLABLE", "POINT(lon lat)"),
    ],
    "footprint": [
        ("damaged_tile_locations", "RECORD", "REPEATED",
         "The tiles damaged at the model card's threshold, where they lie on the ground"),
    ],
    "classified_at": [
        ("capture_date", "DATE", "NULLABLE", "Partition: date of captured_at, else classified_at"),
    ],
    "run_id": [
        ("hostname", "STRING", "NULLABLE", "Run system field"),
        ("os", "STRING", "NULLABLE", "Run system field"),
        ("cpu_model", "STRING", "NULLABLE", "Run system field"),
        ("cores", "INT64", "NULLABLE", "Run system field"),
        ("memory_mb", "INT64", "NULLABLE", "Run system field"),
        ("python", "STRING", "NULLABLE", "Run system field"),
        ("model_sha256", "STRING", "NULLABLE", "Run system field: the model file hash"),
        ("versions", "JSON", "NULLABLE", "Run system field: library versions"),
        ("synced_at", "TIMESTAMP", "REQUIRED", "When the row entered its outbox batch"),
    ],
}


def _frame_fields() -> list[tuple[str, str, str, str]]:
    stale = (set(_LOCAL) | _NOT_SENT) - set(FRAME_COLUMNS)
    if stale:  # a column dropped locally but still sent would fail every load job
        raise RuntimeError(f"sync/schema.py describes columns the frames table lacks: {sorted(stale)}")
    fields: list[tuple[str, str, str, str]] = []
    for name in FRAME_COLUMNS:
        if name not in _NOT_SENT:
            fields.append((name, *_LOCAL[name]))
        fields.extend(_ADDED_AFTER.get(name, ()))
    return fields


#: (name, type, mode, description) of the BigQuery frames table, in column order
FRAME_FIELDS: list[tuple[str, str, str, str]] = _frame_fields()

#: The fields of each RECORD column
RECORD_FIELDS: dict[str, list[tuple[str, str, str, str]]] = {
    "damaged_tile_locations": [
        ("row", "INT64", "REQUIRED", "Tile row in tile_grid"),
        ("col", "INT64", "REQUIRED", "Tile column in tile_grid"),
        ("p_damaged", "FLOAT64", "NULLABLE", "The tile's probability of damage"),
        ("center", "GEOGRAPHY", "NULLABLE", "POINT of the tile centre on the ground"),
        ("polygon", "GEOGRAPHY", "NULLABLE", "The tile's ground quadrilateral"),
    ],
}

FLIGHT_FIELDS: list[tuple[str, str, str, str]] = [
    ("flight_id", "STRING", "REQUIRED", "Flight id"),
    ("device_id", "STRING", "REQUIRED", "Device"),
    ("name", "STRING", "NULLABLE", "Flight name"),
    ("source", "STRING", "NULLABLE", "folder or camera"),
    ("started_at", "TIMESTAMP", "REQUIRED", "Start (UTC)"),
    ("ended_at", "TIMESTAMP", "NULLABLE", "End (UTC)"),
    ("start_date", "DATE", "NULLABLE", "Partition: date of started_at"),
    ("frames", "INT64", "NULLABLE", "Frames in the flight"),
    ("classified", "INT64", "NULLABLE", "Frames classified"),
    ("damaged", "INT64", "NULLABLE", "Frames labelled damaged"),
    ("rejected", "INT64", "NULLABLE", "Frames rejected"),
    ("synced_at", "TIMESTAMP", "REQUIRED", "When the row entered its outbox batch"),
]

RUN_FIELDS = ("hostname", "os", "cpu_model", "cores", "memory_mb", "python", "model_sha256", "versions")
FLIGHTS_TABLE = "flights"


def bq_schema(fields: list[tuple[str, str, str, str]]) -> list[Any]:
    from google.cloud import bigquery

    return [
        bigquery.SchemaField(n, t, mode=m, description=d, fields=bq_schema(RECORD_FIELDS.get(n, [])))
        for n, t, m, d in fields
    ]


def _date(ts: str | None) -> str | None:
    return ts[:10] if ts else None


def _finite(v: Any) -> Any:
    # NaN/inf are not JSON and would fail the whole load job (and every retry of it): a row
    # with a missing number is better than a batch that can never land.
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _point(lat: Any, lon: Any) -> str | None:
    if not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None  # an invalid GEOGRAPHY would fail the load job; lat/lon columns keep it
    return f"POINT({float(lon)!r} {float(lat)!r})"


def _polygon(geojson: Any) -> str | None:
    """WKT of a GeoJSON Polygon ([lon, lat] ring), or None when absent or not a valid ring."""
    try:
        ring = geojson["coordinates"][0] if geojson and geojson.get("type") == "Polygon" else None
        pts = [(float(lon), float(lat)) for lon, lat in ring or ()]
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
    if len(pts) < 4 or not all(-180 <= x <= 180 and -90 <= y <= 90 and math.isfinite(x + y) for x, y in pts):
        return None  # an invalid GEOGRAPHY would fail the whole load job
    return "POLYGON((" + ", ".join(f"{x!r} {y!r}" for x, y in pts) + "))"


def _cell(grid: Any, r: int, c: int) -> Any:
    try:
        return grid[r][c]
    except (TypeError, IndexError):
        return None


def _tile_polygon(corners: Any, r: int, c: int) -> str | None:
    ring = [_cell(corners, r + dr, c + dc) for dr, dc in ((0, 0), (0, 1), (1, 1), (1, 0))]
    if any(p is None for p in ring):
        return None
    return _polygon({"type": "Polygon", "coordinates": [ring + [ring[0]]]})


def damaged_tile_locations(frame: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per damaged tile of ``frame`` (at its model card's threshold, see
    agent.store.tiles), with its ground centre and quadrilateral where known."""
    centres, corners = frame.get("tile_centers"), frame.get("tile_corners")
    out = []
    for r, c, p in damaged_cells(frame):
        centre = _cell(centres, r, c)
        out.append({
            "row": r, "col": c, "p_damaged": p,
            "center": _point(centre[1], centre[0]) if centre else None,
            "polygon": _tile_polygon(corners, r, c),
        })
    return out


def frame_row(
    frame: dict[str, Any], device_id: str, run: dict[str, Any] | None, gcs_uri: str | None, synced_at: str
) -> dict[str, Any]:
    """The BigQuery row of one local frame row (JSON-ready, for a load job)."""
    row = {k: _finite(frame.get(k)) for k, *_ in FRAME_FIELDS}
    grid = row.get("tile_grid")
    if grid is not None:
        grid = [[_finite(p) for p in r] for r in grid] if isinstance(grid, list) else None
    row["tile_grid"] = json.dumps(grid, separators=(",", ":")) if grid is not None else None
    row["warnings"] = json.dumps(row["warnings"]) if row.get("warnings") else None
    row["device_id"] = device_id
    row["gcs_uri"] = gcs_uri
    row["position"] = _point(row.get("lat"), row.get("lon"))
    row["footprint"] = _polygon(frame.get("footprint"))
    row["damaged_tile_locations"] = damaged_tile_locations(frame)
    row["capture_date"] = _date(frame.get("captured_at") or frame.get("classified_at"))
    for k in RUN_FIELDS:
        row[k] = (run or {}).get(k)
    row["synced_at"] = synced_at
    return row


def flight_row(flight: dict[str, Any], device_id: str, synced_at: str) -> dict[str, Any]:
    row = {k: flight.get(k) for k, *_ in FLIGHT_FIELDS}
    row["device_id"] = device_id
    row["start_date"] = _date(flight.get("started_at"))
    row["synced_at"] = synced_at
    return row
