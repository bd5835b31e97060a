"""Home Assistant MQTT discovery: a damaged-frame sensor and an online binary sensor.

Many ground stations run Home Assistant; with ``mqtt.homeassistant_discovery: true`` the agent
publishes retained discovery configs on connect, and both entities read the retained status
topic, so nothing else needs configuring on the Home Assistant side. The last will marks them
unavailable/off when the agent dies.
"""

from __future__ import annotations

from typing import Any

from agent import __version__
from agent.core.config import Config
from agent.live.payloads import Topics


def discovery_messages(cfg: Config, topics: Topics) -> list[tuple[str, dict[str, Any]]]:
    """(topic, retained config payload) pairs for Home Assistant discovery."""
    prefix = cfg.mqtt.homeassistant_prefix.rstrip("/")
    dev = cfg.device_id
    device = {
        "identifiers": [f"skysift_{dev}"],
        "name": f"skysift {dev}",
        "manufacturer": "skysift",
        "model": "damage classifier",
        "sw_version": __version__,
    }
    availability = {
        "availability_topic": topics.status,
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    damaged = {
        "name": "Damaged frames",
        "unique_id": f"{dev}_damaged",
        "object_id": f"skysift_{dev}_damaged",
        "state_topic": topics.status,
        "value_template": "{{ value_json.frames.damaged }}",
        "unit_of_measurement": "frames",
        "state_class": "total_increasing",
        "icon": "mdi:home-alert",
        "device": device,
        **availability,
    }
    online = {
        "name": "Online",
        "unique_id": f"{dev}_online",
        "object_id": f"skysift_{dev}_online",
        "state_topic": topics.status,
        "value_template": "{{ value_json.state }}",
        "payload_on": "online",
        "payload_off": "offline",
        "device_class": "connectivity",
        "device": device,
    }
    return [
        (f"{prefix}/sensor/{dev}_damaged/config", damaged),
        (f"{prefix}/binary_sensor/{dev}_online/config", online),
    ]
