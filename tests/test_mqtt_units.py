"""MQTT pieces that need no broker: telemetry buffer, command dispatch, topics, secrets, TLS config."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.core.config import parse_config
from agent.core.errors import ConfigError
from agent.core.events import EventBus
from agent.core.runtime import AgentContext, Stats
from agent.imaging.decode import ExifInfo
from agent.imaging.geotag import geotag
from agent.live.client import read_password
from agent.live.commands import CommandDispatcher
from agent.live.homeassistant import discovery_messages
from agent.live.mqtt import MqttPublisher
from agent.live.payloads import Topics, flight_summary, frame_message
from agent.live.telemetry import TelemetryBuffer, TelemetryError, parse_position

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=timezone.utc)


def _cfg(tmp_path: Path, **mqtt):
    return parse_config({"device_id": "drone-1", "storage": {"dir": str(tmp_path)},
                         "mqtt": {"host": "127.0.0.1", **mqtt}})


def _fix(dt_s: float, lat: float, lon: float, alt: float | None = 100.0):
    return parse_position(json.dumps({"lat": lat, "lon": lon, "alt": alt,
                                      "time": (T0 + timedelta(seconds=dt_s)).isoformat()}).encode())


def test_telemetry_interpolates_between_fixes():
    buf = TelemetryBuffer(max_age_s=5)
    buf.add(_fix(0, 10.0, 20.0, 100.0))
    buf.add(_fix(2, 10.2, 20.4, 120.0))
    pos = buf.position_at(T0 + timedelta(seconds=1))
    assert pos is not None
    assert pos.lat == pytest.approx(10.1) and pos.lon == pytest.approx(20.2) and pos.alt == pytest.approx(110.0)


def test_telemetry_out_of_order_and_exact_match():
    buf = TelemetryBuffer(max_age_s=5)
    buf.add(_fix(2, 1.0, 1.0))
    buf.add(_fix(0, 0.0, 0.0))  # late arrival goes in its time slot
    assert buf.position_at(T0).lat == 0.0
    assert buf.position_at(T0 + timedelta(seconds=2)).lat == 1.0


def test_telemetry_too_old_or_too_new_is_not_used():
    buf = TelemetryBuffer(max_age_s=5)
    buf.add(_fix(0, 10.0, 20.0))
    assert buf.position_at(T0 + timedelta(seconds=4)).lat == 10.0  # nearest within max age
    assert buf.position_at(T0 + timedelta(seconds=6)) is None  # stale
    assert buf.position_at(T0 - timedelta(seconds=6)) is None  # frame long before the fix
    assert TelemetryBuffer(5).position_at(T0) is None  # nothing received


def test_telemetry_one_side_stale_uses_the_fresh_fix():
    buf = TelemetryBuffer(max_age_s=5)
    buf.add(_fix(0, 10.0, 20.0))
    buf.add(_fix(30, 11.0, 21.0))
    assert buf.position_at(T0 + timedelta(seconds=27)).lat == 11.0
    assert buf.position_at(T0 + timedelta(seconds=15)) is None


def test_telemetry_antimeridian_goes_the_short_way():
    buf = TelemetryBuffer(max_age_s=5)
    buf.add(_fix(0, 0.0, 179.0))
    buf.add(_fix(2, 0.0, -179.0))
    assert abs(buf.position_at(T0 + timedelta(seconds=1)).lon) == pytest.approx(180.0)


def test_telemetry_time_formats():
    epoch = T0.timestamp()
    assert parse_position(json.dumps({"lat": 1, "lon": 2, "time": epoch}).encode()).time == T0
    assert parse_position(json.dumps({"lat": 1, "lon": 2, "time": epoch * 1000}).encode()).time == T0
    assert parse_position(b'{"lat": 1, "lon": 2, "time": "2026-11-26T12:00:00Z"}').time == T0
    assert parse_position(b'{"lat": 1, "lon": 2, "time": "2026-11-26T13:00:00+01:00"}').time == T0
    assert parse_position(b'{"lat": 1, "lon": 2, "time": "2026-11-26T12:00:00"}').time == T0
    now = datetime.now(timezone.utc)
    p = parse_position(b'{"lat": 1, "lon": 2}', received=now)
    assert p.time == now and p.alt is None


@pytest.mark.parametrize("payload", [
    b"not json", b"[1, 2]", b'{"lat": 1}', b'{"lat": "x", "lon": 2}', b'{"lat": 91, "lon": 2}',
    b'{"lat": 1, "lon": 2, "time": "yesterday"}', b'{"lat": true, "lon": 2}', b"\xff\xfe",
])
def test_telemetry_rejects_bad_messages(payload):
    with pytest.raises(TelemetryError):
        parse_position(payload)


def test_telemetry_geotags_through_agent_geotag():
    buf = TelemetryBuffer(max_age_s=5)
    buf.add(_fix(0, 37.0, -122.0, 50.0))
    no_gps = ExifInfo(lat=None, lon=None, alt=None, captured_at="2026-11-26T12:00:01Z", orientation=None)
    lat, lon, alt, src = geotag(no_gps, "2026-11-26T12:00:01.000Z", [buf])
    assert (lat, lon, alt, src) == (37.0, -122.0, 50.0, "telemetry")
    # EXIF GPS wins over telemetry
    gps = ExifInfo(lat=1.0, lon=2.0, alt=3.0, captured_at=None, orientation=None)
    assert geotag(gps, "2026-11-26T12:00:01.000Z", [buf])[3] == "exif"
    # too old: no position
    assert geotag(no_gps, "2026-11-26T12:00:30.000Z", [buf])[3] == "none"


def test_topics_and_command_names(tmp_path):
    t = Topics(_cfg(tmp_path, topic_prefix="fleet/"))
    assert t.status == "fleet/drone-1/status"
    assert t.flight("f1") == "fleet/drone-1/flights/f1"
    assert t.command_name("fleet/drone-1/cmd/flight/start") == "flight/start"
    assert t.command_name("fleet/drone-1/cmd/flight/start/reply") is None
    assert t.command_name("fleet/drone-1/cmd/") is None
    assert t.command_name("fleet/drone-2/cmd/sync") is None
    assert t.reply("sync") == "fleet/drone-1/cmd/sync/reply"


def test_payloads():
    row = {"frame_id": "a" * 32, "flight_id": "f", "status": "classified", "label": "damaged",
           "p_damaged": 0.912345678, "tiles": 4, "damaged_tiles": 1, "tile_grid": [[0.9]], "bytes": 5}
    msg = frame_message(row)
    assert msg["p_damaged"] == 0.9123 and msg["reason"] is None
    assert "tile_grid" not in msg and "bytes" not in msg
    assert flight_summary({"flight_id": "f", "ended_at": None})["state"] == "running"
    assert flight_summary({"flight_id": "f", "ended_at": "2026-11-26T12:00:00Z"})["state"] == "ended"


def _ctx(cfg):
    return AgentContext(cfg=cfg, bus=EventBus(), stats=Stats(), stop=threading.Event())


def test_commands_dispatch_and_errors(tmp_path):
    ctx = _ctx(_cfg(tmp_path))
    calls = []
    ctx.commands["flight_start"] = lambda name=None: calls.append(name) or f"id-{name}"
    d = CommandDispatcher(ctx, status_now=lambda: {"state": "online"})
    assert d.handle("flight/start", b'{"name": "Sector 7", "id": 9}') == {
        "command": "flight/start", "id": 9, "ok": True, "result": {"flight_id": "id-Sector 7"}}
    assert calls == ["Sector 7"]
    assert d.handle("status", b"")["result"] == {"state": "online"}
    r = d.handle("sync", b"{}")
    assert r["ok"] is False and "not available" in r["error"] and "sync_now" in r["error"]
    r = d.handle("flight/end", b"")
    assert r["ok"] is False and "flight_end" in r["error"]
    r = d.handle("reboot", b"")
    assert r["ok"] is False and "unknown command" in r["error"]
    for bad in (b"{nope", b"[1]", b'"text"', b'{"name": 5}'):
        r = d.handle("flight/start", bad)
        assert r["ok"] is False and "malformed" in r["error"], bad
    ctx.commands["sync_now"] = lambda: 1 / 0
    r = d.handle("sync", b"")
    assert r["ok"] is False and "ZeroDivisionError" in r["error"]


def test_password_from_file_credentials_dir_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("SKYSIFT_MQTT_PASSWORD", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert read_password(_cfg(tmp_path).mqtt) is None
    monkeypatch.setenv("SKYSIFT_MQTT_PASSWORD", "from-env")
    assert read_password(_cfg(tmp_path).mqtt) == "from-env"
    (tmp_path / "pw").write_text("from-file\n")
    assert read_password(_cfg(tmp_path, password_file=str(tmp_path / "pw")).mqtt) == "from-file"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_password(_cfg(tmp_path, password_file="mqtt-password").mqtt) == "from-systemd"
    with pytest.raises(ConfigError, match="password_file"):
        read_password(_cfg(tmp_path, password_file=str(tmp_path / "missing")).mqtt)


def test_bad_tls_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="mqtt.tls"):
        MqttPublisher(_cfg(tmp_path, tls={"ca_file": str(tmp_path / "nope.crt")}))
    with pytest.raises(ConfigError, match="mqtt.tls"):
        MqttPublisher(_cfg(tmp_path, tls={"cert_file": str(tmp_path / "c.crt"), "key_file": str(tmp_path / "k")}))
    with pytest.raises(ConfigError, match="mqtt.host"):
        MqttPublisher(parse_config({}))
    with pytest.raises(ConfigError, match="topic_prefix"):
        MqttPublisher(_cfg(tmp_path, topic_prefix="fleet/#"))


def test_home_assistant_discovery(tmp_path):
    cfg = _cfg(tmp_path, homeassistant_discovery=True)
    msgs = dict(discovery_messages(cfg, Topics(cfg)))
    sensor = msgs["homeassistant/sensor/drone-1_damaged/config"]
    online = msgs["homeassistant/binary_sensor/drone-1_online/config"]
    assert sensor["state_topic"] == "skysift/drone-1/status"
    assert sensor["availability_topic"] == "skysift/drone-1/status"
    assert online["payload_on"] == "online" and online["device_class"] == "connectivity"


def test_home_assistant_discovery_uses_default_entity_id(tmp_path):
    msgs = dict(discovery_messages(_cfg(tmp_path), Topics(_cfg(tmp_path))))
    sensor = msgs["homeassistant/sensor/drone-1_damaged/config"]
    online = msgs["homeassistant/binary_sensor/drone-1_online/config"]
    assert "object_id" not in sensor and "object_id" not in online
    # the entity ids Home Assistant made from the old object_id "skysift_drone-1_damaged"
    assert sensor["default_entity_id"] == "sensor.skysift_drone_1_damaged"
    assert online["default_entity_id"] == "binary_sensor.skysift_drone_1_online"
    assert sensor["unique_id"] == "drone-1_damaged"  # unchanged: the registry keys on it
    cfg = parse_config({"device_id": "Drone 7.b", "mqtt": {"host": "127.0.0.1"}})
    topics = [t for t, _ in discovery_messages(cfg, Topics(cfg))]
    assert topics == ["homeassistant/sensor/Drone_7_b_damaged/config",
                      "homeassistant/binary_sensor/Drone_7_b_online/config"]


def test_telemetry_and_connect_errors_are_bounded_and_named():
    import socket
    import ssl

    from agent.live.client import connect_error

    with pytest.raises(TelemetryError, match="too large"):
        parse_position(json.dumps({"lat": 1.0, "lon": 2.0, "pad": "x" * 5000}).encode())
    err = ssl.SSLCertVerificationError(1, "certificate verify failed")
    err.verify_message = "certificate has expired"
    assert connect_error(err) == "TLS certificate verification failed: certificate has expired"
    assert connect_error(ConnectionRefusedError(111, "Connection refused")) == (
        "cannot reach the broker: Connection refused")
    assert "resolve" in connect_error(socket.gaierror(-2, "Name or service not known"))


def test_frame_message_sends_the_centres_of_the_tiles_damaged_at_the_cards_threshold():
    # damaged_tiles is the classifier's count at its card's threshold: the most probable ones
    row = {"frame_id": "a" * 32, "status": "classified", "p_damaged": 0.95, "damaged_tiles": 2,
           "tile_grid": [[0.9, 0.3], [0.6, 0.95]],
           "tile_centers": [[[8.0, 47.0], [8.1, 47.0]], [[8.0, 47.1], [8.1, 47.1]]],
           "tile_corners": [[[8.0, 47.0]]]}
    msg = frame_message(row)
    assert msg["damaged_tile_centers"] == [[8.0, 47.0], [8.1, 47.1]]  # 0.9 and 0.95, grid order
    assert frame_message({**row, "damaged_tiles": 3})["damaged_tile_centers"] == [
        [8.0, 47.0], [8.0, 47.1], [8.1, 47.1]]
    unplaced = {**row, "tile_centers": [[[8.0, 47.0], None], [[8.0, 47.1], None]]}
    assert frame_message(unplaced)["damaged_tile_centers"] == [[8.0, 47.0]]
    assert "tile_centers" not in msg and "tile_corners" not in msg and "footprint" in msg
    assert frame_message({**row, "tile_centers": None})["damaged_tile_centers"] == []
    assert frame_message({**row, "damaged_tiles": 0})["damaged_tile_centers"] == []
