"""The fleet's devices on disk: a configuration, a database and image files per device.

Frames are committed through the real :class:`agent.store.db.Store` in the row shape the
pipeline commits (no model runs: the label comes from the tile's folder). Every device gets
the shared aerial tiles made distinct: a tag after the PNG's end (still a valid PNG, still the
real picture) gives each (device, frame) its own content hash, and frame ids are content
hashes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

from agent.bench.fleet_device import CONFIG_NAME
from agent.store.db import Store

FLIGHT = "fleet-flight"
_T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Tile:
    data: bytes
    damaged: bool


def load_tiles(data_dir: Path) -> list[Tile]:
    """The aerial tiles under ``data_dir`` (``damaged/`` and ``undamaged/``), interleaved."""
    tiles = [Tile(p.read_bytes(), kind == "damaged")
             for kind in ("damaged", "undamaged") for p in sorted((data_dir / kind).glob("*.png"))]
    if not tiles:
        raise FileNotFoundError(f"no aerial tiles under {data_dir} (damaged/*.png, undamaged/*.png)")
    return tiles


def write_config(device_dir: Path, device_id: str, sync: dict[str, Any]) -> Path:
    """The device's ``skysift.yaml``: its own storage directory and device id, the fleet's sync."""
    device_dir.mkdir(parents=True, exist_ok=True)
    path = device_dir / CONFIG_NAME
    data = {"device_id": device_id, "storage": {"dir": str(device_dir / "data")}, "sync": sync}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def add_frames(db_path: Path, device_id: str, tiles: list[Tile], start: int, n: int, end_flight: bool) -> int:
    """Commit frames ``start .. start+n-1`` of the device, images written first, as ingest does.

    ``end_flight`` ends the device's flight after them (a flight row is then owed too).
    """
    out = db_path.parent / "frames" / FLIGHT
    out.mkdir(parents=True, exist_ok=True)
    run_id = f"fleet-{device_id}"
    store = Store(db_path)
    try:
        if start == 0:  # a second start_run would replace the run row its frames point to
            store.start_run({"run_id": run_id, "device_id": device_id, "hostname": device_id})
        rows = [_frame(out, device_id, run_id, tiles, start + i) for i in range(n)]
        store.add_frames(rows)
        if end_flight:
            store.end_flight(FLIGHT)
    finally:
        store.close()
    return len(rows)


def _frame(out: Path, device_id: str, run_id: str, tiles: list[Tile], i: int) -> dict[str, Any]:
    # a device's own offset into the tiles, so devices do not all start on the same picture
    tile = tiles[(i + int(hashlib.sha1(device_id.encode()).hexdigest()[:6], 16)) % len(tiles)]
    data = tile.data + f"skysift-fleet-{device_id}-{i}".encode()
    sha = hashlib.sha256(data).hexdigest()
    path = out / f"{sha[:32]}.png"
    path.write_bytes(data)
    p = 0.9 if tile.damaged else 0.1
    return {
        "frame_id": sha[:32], "flight_id": FLIGHT, "source": "camera",
        "image_path": str(path), "sha256": sha, "bytes": len(data), "status": "classified",
        "label": "damaged" if tile.damaged else "undamaged", "p_damaged": p,
        "tiles": 1, "damaged_tiles": int(tile.damaged), "tile_px": 128, "tile_grid": [[p]],
        "width": 128, "height": 128, "lat": 40.4 + i * 1e-5, "lon": -3.7 - i * 1e-5, "alt": 100.0,
        "geo_source": "exif",
        "captured_at": (_T0 + timedelta(seconds=2 * i)).isoformat().replace("+00:00", "Z"),
        "engine": "openvino", "device": "CPU", "precision": "f32", "inference_ms": 3.0,
        "total_ms": 8.0, "run_id": run_id,
    }
