"""Topics and JSON payloads of the MQTT live feed: what a ground station receives.

Every topic sits under ``<mqtt.topic_prefix>/<device_id>/``. Payloads are UTF-8 JSON objects;
keys are stable (they are part of the interface consumers code against), values may be null.
Builders here are pure functions of a frame/flight row or a status snapshot, so the payloads
can be tested and documented without a broker.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from typing import Any

from agent import __version__
from agent.core.config import Config
from agent.store.columns import FRAME_COLUMNS
from agent.store.tiles import damaged_cells

#: Frame columns a ``frames`` message leaves out: device-local paths and hashes, the bulky tile
#: grid and its ground grids (the damaged tiles' centres are sent instead), and timings a field
#: team does not act on. Every other column is sent, so a column added
#: to the frames table reaches the ground station without a second list to keep.
NOT_SENT = frozenset({
    "source", "image_path", "sha256", "bytes", "tile_px", "tile_grid", "width", "height",
    "precision", "inference_ms", "total_ms", "run_id", "tile_centers", "tile_corners",
})
#: The keys of one ``frames`` message, in column order (rejected frames carry ``reason``).
FRAME_KEYS = tuple(c for c in FRAME_COLUMNS if c not in NOT_SENT)

FLIGHT_KEYS = ("flight_id", "name", "source", "started_at", "ended_at", "frames", "classified", "damaged", "rejected")


class Topics:
    """The topic names of one device."""

    def __init__(self, cfg: Config):
        self.base = f"{cfg.mqtt.topic_prefix.rstrip('/')}/{cfg.device_id}"
        self.status = f"{self.base}/status"
        self.frames = f"{self.base}/frames"
        self.cmd_prefix = f"{self.base}/cmd/"
        self.cmd_filter = f"{self.base}/cmd/#"
        self.telemetry = cfg.mqtt.telemetry_topic

    def flight(self, flight_id: str) -> str:
        return f"{self.base}/flights/{flight_id}"

    def reply(self, command: str) -> str:
        return f"{self.cmd_prefix}{command}/reply"

    def command_name(self, topic: str) -> str | None:
        """``<base>/cmd/flight/start`` -> ``flight/start``; None for replies and other topics."""
        if not topic.startswith(self.cmd_prefix):
            return None
        name = topic[len(self.cmd_prefix) :]
        # We subscribe to cmd/#, so our own replies come back to us: never answer them.
        if not name or name == "reply" or name.endswith("/reply"):
            return None
        return name


def dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), default=str).encode("utf-8")


def damaged_tile_centers(row: dict[str, Any]) -> list[list[float]]:
    """[lon, lat] of each damaged tile of ``row`` (at its model card's threshold, see
    agent.store.tiles) that is placed on the ground, in grid order."""
    centres = row.get("tile_centers") or []
    out = []
    for r, c, _ in damaged_cells(row):
        centre = centres[r][c] if r < len(centres) and centres[r] and c < len(centres[r]) else None
        if centre is not None:
            out.append(centre)
    return out


def frame_message(row: dict[str, Any]) -> dict[str, Any]:
    """One ``frames`` message from a frame row (agent/store.py ``frames`` table), with the
    ground centres of its damaged tiles."""
    msg = {k: row.get(k) for k in FRAME_KEYS}
    if msg["p_damaged"] is not None:
        msg["p_damaged"] = round(float(msg["p_damaged"]), 4)
    msg["damaged_tile_centers"] = damaged_tile_centers(row)
    return msg


def flight_summary(row: dict[str, Any]) -> dict[str, Any]:
    """The retained ``flights/<flight_id>`` summary from a flight row."""
    msg = {k: row.get(k) for k in FLIGHT_KEYS}
    msg["state"] = "ended" if row.get("ended_at") else "running"
    return msg


def offline_status(device_id: str) -> dict[str, Any]:
    """The last will (and the clean-shutdown message) on the status topic."""
    return {"state": "offline", "device_id": device_id}


def versions() -> dict[str, str | None]:
    """Versions worth seeing from the ground. Engines are read only if already imported:
    importing OpenVINO or TensorFlow here just to print a version would cost seconds."""
    out: dict[str, str | None] = {
        "skysift": __version__,
        "python": platform.python_version(),
    }
    for dist, module in (("paho-mqtt", None), ("openvino", "openvino"), ("tensorflow", "tensorflow")):
        if module is not None and module not in sys.modules:
            continue
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out
