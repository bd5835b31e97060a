"""Home Assistant MQTT discovery: a damaged-frame sensor and an online binary sensor.

Many ground stations run Home Assistant; with ``mqtt.homeassistant_discovery: true`` the agent
publishes retained discovery configs on connect, and both entities read the retained status
topic, so nothing else needs configuring on the Home Assistant side. The last will marks them
unavailable/off when the agent dies.

Entities are named with ``default_entity_id`` (``object_id`` is deprecated since Home Assistant
2025.10 and removed in 2026.4); its value is the entity id Home Assistant made from the old
``object_id``, so existing dashboards and automations keep working.
"""

from __future__ import annotations

import re
from typing import Any

from agent import __version__
from agent.core.config import Config
from agent.live.payloads import Topics


def topic_id(device_id: str) -> str:
    """The device id as a discovery topic level: Home Assistant accepts ``[a-zA-Z0-9_-]``."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", device_id)


def entity_id(domain: str, object_id: str) -> str:
    """``<domain>.<object_id>`` slugified as Home Assistant made entity ids from ``object_id``."""
    return f"{domain}.{re.sub(r'[^a-z0-9]+', '_', object_id.lower()).strip('_')}"


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
        "default_entity_id": entity_id("sensor", f"skysift_{dev}_damaged"),
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
        "default_entity_id": entity_id("binary_sensor", f"skysift_{dev}_online"),
        "state_topic": topics.status,
        "value_template": "{{ value_json.state }}",
        "payload_on": "online",
        "payload_off": "offline",
        "device_class": "connectivity",
        "device": device,
    }
    node = topic_id(dev)
    return [
        (f"{prefix}/sensor/{node}_damaged/config", damaged),
        (f"{prefix}/binary_sensor/{node}_online/config", online),
    ]
