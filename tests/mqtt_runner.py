"""Agent-side helpers for the MQTT tests, and a runner process for the kill -9 test.

``python tests/mqtt_runner.py CONFIG.yaml`` builds what ``skysift run`` builds around the MQTT
component (AgentContext, a real Store file, the real flight command handlers of the pipeline)
and starts :class:`agent.live.mqtt.MqttPublisher`; it prints ``ready`` once connected and then waits
to be killed.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from agent.core.config import Config, load_config
from agent.core.events import EventBus
from agent.core.runtime import AgentContext, Stats
from agent.ingest.pipeline import FlightTracker
from agent.store.db import Store


def make_ctx(cfg: Config) -> AgentContext:
    """An AgentContext with the flight commands registered as the pipeline registers them."""
    ctx = AgentContext(cfg=cfg, bus=EventBus(), stats=Stats(), stop=threading.Event(), run_id="test-run")
    ctx.stats.engine, ctx.stats.device, ctx.stats.precision = "openvino", "CPU", "f32"
    flights = FlightTracker(ctx, cfg.db_path)
    ctx.commands["flight_start"] = lambda name=None: flights.start_manual(name)
    ctx.commands["flight_end"] = lambda: flights.end_manual()
    return ctx


def start_publisher(cfg: Config):
    """(store, ctx, publisher): a real Store, the agent's context and a started MqttPublisher."""
    from agent.live.mqtt import MqttPublisher

    store = Store(cfg.db_path)
    ctx = make_ctx(cfg)
    pub = MqttPublisher(cfg)
    pub.start(ctx)
    return store, ctx, pub


def frame_row(path: Path, flight_id: str, label: str, **extra: Any) -> dict[str, Any]:
    """A classified frame row for a real image file (id = first 32 hex of its sha256)."""
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    with Image.open(path) as im:
        width, height = im.size
    p = 0.93 if label == "damaged" else 0.04
    row = {
        "frame_id": sha[:32],
        "flight_id": flight_id,
        "source": "folder",
        "image_path": str(path),
        "sha256": sha,
        "bytes": len(data),
        "status": "classified",
        "label": label,
        "p_damaged": p,
        "tiles": 1,
        "damaged_tiles": int(label == "damaged"),
        "tile_px": 128,
        "tile_grid": [[p]],
        "width": width,
        "height": height,
        "geo_source": "none",
        "captured_at": "2026-11-26T10:00:00.000Z",
        "engine": "openvino",
        "device": "CPU",
        "precision": "f32",
    }
    row.update(extra)
    return row


def rejected_row(path: Path, flight_id: str, reason: str = "corrupt") -> dict[str, Any]:
    data = path.read_bytes()
    sha = hashlib.sha256(b"rejected:" + data).hexdigest()  # distinct id from the good copy
    return {
        "frame_id": sha[:32],
        "flight_id": flight_id,
        "source": "folder",
        "image_path": str(path),
        "sha256": sha,
        "bytes": len(data),
        "status": "rejected",
        "reason": reason,
        "geo_source": "none",
    }


def commit(ctx: AgentContext, store: Store, rows: list[dict[str, Any]]) -> list[str]:
    """Commit rows as the pipeline does: one transaction, then ``frames_committed``."""
    for fid in dict.fromkeys(r["flight_id"] for r in rows):
        if store.ensure_flight(fid, name=fid, source="folder"):
            ctx.bus.publish("flight_started", flight_id=fid)
    ids = store.add_frames(rows)
    committed = [r for r in rows if r["frame_id"] in set(ids)]
    ctx.bus.publish("frames_committed", rows=committed)
    return ids


def main(argv: list[str]) -> int:
    from agent.live.mqtt import MqttPublisher

    cfg = load_config(argv[0])
    Store(cfg.db_path).close()  # create/migrate the file as the agent does before components
    ctx = make_ctx(cfg)
    pub = MqttPublisher(cfg)
    pub.start(ctx)
    if not pub.connected.wait(20):
        print("not connected", flush=True)
        return 1
    print("ready", flush=True)
    ctx.stop.wait()
    pub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
