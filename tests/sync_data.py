"""Realistic local data for the sync tests: real aerial tiles copied to a temp dir, rows added
through Store.add_frames exactly as the pipeline would (no dependency on the pipeline itself).

Each copy gets a few bytes appended after the PNG's end (still a valid PNG, still the real
picture) so that many frames can be made from the 200 tiles, each with its own content hash:
frame_id is content-derived.
"""

from __future__ import annotations

import hashlib
import itertools
from datetime import datetime, timedelta, timezone
from pathlib import Path

from agent.store.db import Store

RUN_ID = "run-sync-test"


def ensure_run(store: Store, device_id: str = "drone-test") -> str:
    store.start_run(
        {
            "run_id": RUN_ID,
            "device_id": device_id,
            "hostname": "test-host",
            "os": "Linux",
            "cpu_model": "test cpu",
            "cores": 2,
            "memory_mb": 4096,
            "python": "3.11",
            "engine": "openvino",
            "device": "CPU",
            "precision": "f32",
            "model_sha256": "ab" * 32,
            "versions": {"skysift": "0.1.0"},
        }
    )
    return RUN_ID


_counter = itertools.count()


def make_frames(
    store: Store,
    tiles: dict[str, list[Path]],
    out_dir: Path,
    n: int,
    flight_id: str = "flight-1",
    damaged_every: int = 3,
    source: str = "folder",
) -> list[dict]:
    """Write ``n`` image files into ``out_dir`` and commit their frame rows; return the rows.

    Every ``damaged_every``-th frame is a damaged tile labelled damaged, the rest undamaged.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = ensure_run(store)
    t0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
    rows = []
    for i in range(n):
        k = next(_counter)
        damaged = i % damaged_every == 0
        src = tiles["damaged" if damaged else "undamaged"]
        tile = src[k % len(src)]
        data = tile.read_bytes() + f"skysift-test-{k}".encode()
        sha = hashlib.sha256(data).hexdigest()
        path = out_dir / f"{sha[:32]}.png" if source == "camera" else out_dir / f"img_{k:06d}.png"
        path.write_bytes(data)
        p = 0.91 if damaged else 0.07
        captured = t0 + timedelta(seconds=2 * k)
        rows.append(
            {
                "frame_id": sha[:32],
                "flight_id": flight_id,
                "source": source,
                "image_path": str(path),
                "sha256": sha,
                "bytes": len(data),
                "status": "classified",
                "label": "damaged" if damaged else "undamaged",
                "p_damaged": p,
                "tiles": 1,
                "damaged_tiles": int(damaged),
                "tile_px": 128,
                "tile_grid": [[p]],
                "width": 128,
                "height": 128,
                "lat": 40.4168 + k * 1e-5,
                "lon": -3.7038 - k * 1e-5,
                "alt": 120.0,
                "geo_source": "exif",
                "captured_at": captured.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "engine": "openvino",
                "device": "CPU",
                "precision": "f32",
                "inference_ms": 3.2,
                "total_ms": 9.8,
                "run_id": run_id,
            }
        )
    store.add_frames(rows)
    return rows
