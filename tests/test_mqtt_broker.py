"""The MQTT live feed against a real Mosquitto broker started by the test (tests/mosquitto.py)."""

from __future__ import annotations

import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from mosquitto import PASSWORD, USER, Subscriber, make_broker, mosquitto, mosquitto_tls  # noqa: F401
from mqtt_runner import commit, frame_row, make_ctx, rejected_row
from mqtt_runner import start_publisher as _start

from agent.core.config import parse_config
from agent.imaging.decode import ExifInfo
from agent.imaging.geotag import geotag
from agent.live.mqtt import MqttPublisher
from agent.store.db import Store, wait_for

ROOT = Path(__file__).resolve().parents[1]
DEV = "drone-1"
BASE = f"skysift/{DEV}"


def _cfg(tmp_path: Path, port: int, **mqtt):
    return parse_config({
        "device_id": DEV,
        "storage": {"dir": str(tmp_path / "data")},
        "mqtt": {"host": "127.0.0.1", "port": port, "flight_summary_interval_s": 0.5, **mqtt},
    })


@pytest.fixture
def tiles(aerial_tiles):
    return [(p, "damaged") for p in aerial_tiles["damaged"][:6]] + [
        (p, "undamaged") for p in aerial_tiles["undamaged"][:6]]


def _frames(sub: Subscriber) -> list[dict]:
    return [m.json() for m in sub.on(f"{BASE}/frames")]


def _unique(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def test_status_frames_and_flight_summaries(tmp_path, mosquitto, tiles):  # noqa: F811
    cfg = _cfg(tmp_path, mosquitto.port, homeassistant_discovery=True)
    sub = Subscriber(mosquitto, ["skysift/#", "homeassistant/#"]).start()
    store, ctx, pub = _start(cfg)
    try:
        assert pub.connected.wait(15)
        rows = [frame_row(p, "sector-7", label) for p, label in tiles]
        rows.append(rejected_row(tiles[0][0], "sector-7", reason="truncated"))
        commit(ctx, store, rows)
        sub.wait_for(lambda ms: len(_frames(sub)) >= len(rows))
        got = _frames(sub)
        assert [m["frame_id"] for m in got] == [r["frame_id"] for r in rows]  # commit order
        first = got[0]
        assert first["flight_id"] == "sector-7" and first["status"] == "classified"
        assert first["label"] == "damaged" and first["p_damaged"] == 0.93 and first["tiles"] == 1
        assert {"lat", "lon", "captured_at", "engine", "device", "damaged_tiles"} <= set(first)
        assert got[-1]["status"] == "rejected" and got[-1]["reason"] == "truncated"
        # marked delivered only after the broker acknowledged them
        assert wait_for(lambda: store.count_pending("mqtt") == 0, 10)
        assert store.delivery("mqtt", rows[0]["frame_id"])["state"] == "done"

        # the running summary catches up with every frame (throttled, retained)
        def summary(ms):
            s = [m for m in ms if m.topic == f"{BASE}/flights/sector-7"]
            return s and s[-1].json()["frames"] == len(rows) and s[-1]

        last = sub.wait_for(summary)
        assert last.json()["damaged"] == 6 and last.json()["state"] == "running"

        fid = ctx.command("flight_start", name="Sector 9")
        assert ctx.command("flight_end") == fid
        ended = sub.wait_for(lambda ms: [m for m in ms if m.topic == f"{BASE}/flights/{fid}"
                                         and m.json()["state"] == "ended"])
        assert ended[-1].json()["ended_at"]

        status = sub.wait_for(lambda ms: [m.json() for m in ms if m.topic == f"{BASE}/status"
                                          and m.json().get("frames", {}).get("total") == len(rows)])
        s = status[-1]
        assert s["state"] == "online" and s["engine"] == "openvino" and s["device"] == "CPU"
        assert s["frames"]["damaged"] == 6 and s["frames"]["rejected"] == 1
        assert "mqtt" in s["backlog"] and s["versions"]["skysift"]
        ha = {m.topic for m in sub.messages if m.topic.startswith("homeassistant/")}
        assert ha == {f"homeassistant/sensor/{DEV}_damaged/config",
                      f"homeassistant/binary_sensor/{DEV}_online/config"}
    finally:
        pub.stop()
        store.close()
        sub.stop()
    # retained: a subscriber arriving later gets the flight summary and the offline status
    late = Subscriber(mosquitto, [f"{BASE}/status", f"{BASE}/flights/+"]).start()
    try:
        late.wait_for(lambda ms: len(ms) >= 3)
        assert all(m.retain for m in late.messages)
        assert late.on(f"{BASE}/status")[-1].json()["state"] == "offline"
        assert late.on(f"{BASE}/flights/sector-7")[-1].json()["frames"] == len(rows)
    finally:
        late.stop()


def test_commands_and_error_replies(tmp_path, mosquitto):  # noqa: F811
    cfg = _cfg(tmp_path, mosquitto.port)
    sub = Subscriber(mosquitto, [f"{BASE}/cmd/#", f"{BASE}/flights/+"]).start()
    store, ctx, pub = _start(cfg)
    try:
        assert pub.subscribed.wait(15)  # commands sent before the SUBACK would go nowhere

        def ask(name: str, payload: bytes | str | dict = b"") -> dict:
            n = len(sub.on(f"{BASE}/cmd/{name}/reply"))
            sub.publish(f"{BASE}/cmd/{name}", payload)
            return sub.wait_for(lambda ms: len(sub.on(f"{BASE}/cmd/{name}/reply")) > n
                                and sub.on(f"{BASE}/cmd/{name}/reply")[-1].json())

        r = ask("flight/start", {"name": "Sector 7", "id": "q1"})
        assert r["ok"] is True and r["id"] == "q1"
        fid = r["result"]["flight_id"]
        row = store.flight(fid)
        assert row is not None and row["name"] == "Sector 7" and row["ended_at"] is None
        sub.wait_for(lambda ms: sub.on(f"{BASE}/flights/{fid}"))

        r = ask("flight/end")
        assert r["ok"] is True and r["result"]["flight_id"] == fid
        assert store.flight(fid)["ended_at"] is not None

        r = ask("sync")
        assert r["ok"] is False and "sync_now" in r["error"]  # sync not configured here
        asked = []
        ctx.commands["sync_now"] = lambda: asked.append(1)
        r = ask("sync")
        assert r["ok"] is True and asked == [1]

        r = ask("status", {"id": 7})
        assert r["ok"] is True and r["id"] == 7 and r["result"]["state"] == "online"
        assert r["result"]["current_flight"] is None

        assert "unknown command" in ask("self-destruct")["error"]
        assert "malformed" in ask("flight/start", "{not json")["error"]
        assert "malformed" in ask("flight/start", {"name": 12})["error"]
        # still alive and answering after the bad ones
        r = ask("flight/start")
        assert r["ok"] is True and store.flight(r["result"]["flight_id"]) is not None
    finally:
        pub.stop()
        store.close()
        sub.stop()


def test_broker_restart_loses_nothing(tmp_path, tiles, caplog):
    caplog.set_level(logging.INFO, logger="agent.live.mqtt")
    broker = make_broker(tmp_path / "broker").start()
    cfg = _cfg(tmp_path, broker.port)
    sub = Subscriber(broker, [f"{BASE}/frames"]).start()
    store, ctx, pub = _start(cfg)
    links: list[tuple[str, str]] = []
    ctx.bus.subscribe("sync_state", lambda target, state, **_: links.append((target, state)))
    try:
        assert pub.connected.wait(15)
        rows = [frame_row(p, "f1", label) for p, label in tiles]
        commit(ctx, store, rows[:4])
        sub.wait_for(lambda ms: len(ms) >= 4)
        sub.stop()
        broker.stop()  # the broker goes away while frames keep coming
        assert wait_for(lambda: not pub.connected.is_set(), 10)
        commit(ctx, store, rows[4:8])
        commit(ctx, store, rows[8:])
        assert store.count_pending("mqtt") >= 8
        broker.start()  # same port, no persistence: only the agent's outbox remembers
        sub = Subscriber(broker, [f"{BASE}/frames"]).start()
        got = sub.wait_for(lambda ms: len(_unique([m.json()["frame_id"] for m in ms])) >= 8 and ms, timeout=60)
        ids = _unique([m.json()["frame_id"] for m in got])
        assert ids == [r["frame_id"] for r in rows[4:]]  # every frame, in commit order
        assert wait_for(lambda: store.count_pending("mqtt") == 0, 15)
        # status and metrics hear of the link going down and coming back, once each
        assert ("mqtt", "down") in links and links[-1] == ("mqtt", "ok"), links
        assert links.count(("mqtt", "down")) == 1, links
        # and the journal gets one line for the outage and one for the recovery, not one a retry
        lines = [r.getMessage() for r in caplog.records if r.name == "agent.live.mqtt"]
        assert sum(f"MQTT broker 127.0.0.1:{broker.port}: link down: " in m for m in lines) == 1, lines
        assert sum(f"MQTT broker 127.0.0.1:{broker.port}: recovered after" in m for m in lines) == 1, lines
    finally:
        pub.stop()
        store.close()
        sub.stop()
        broker.stop()


def test_restart_sends_backlog_and_budget_drops_oldest(tmp_path, mosquitto, tiles):  # noqa: F811
    dead_port = mosquitto.port + 1 if mosquitto.port < 65000 else mosquitto.port - 1
    cfg_down = _cfg(tmp_path, dead_port, outbox_max_rows=8)
    store, ctx, pub = _start(cfg_down)  # no broker there: start-up and ingest go on regardless
    rows = [frame_row(p, "f1", label) for p, label in tiles]
    try:
        commit(ctx, store, rows)
        # 12 unsent, budget 8: the 4 oldest are dropped for MQTT, their rows stay
        assert wait_for(lambda: store.count_pending("mqtt") == 8, 10)
        assert [store.delivery("mqtt", r["frame_id"])["state"] for r in rows[:4]] == ["dropped"] * 4
        assert store.count_frames() == len(rows)
        assert not pub.connected.is_set() and pub.last_error
    finally:
        pub.stop()
        store.close()
    # a new process on the same database, broker reachable: the backlog goes out in order
    sub = Subscriber(mosquitto, [f"{BASE}/frames"]).start()
    store, ctx, pub = _start(_cfg(tmp_path, mosquitto.port))
    try:
        got = sub.wait_for(lambda ms: len(ms) >= 8 and ms)
        assert [m.json()["frame_id"] for m in got] == [r["frame_id"] for r in rows[4:]]
        assert wait_for(lambda: store.count_pending("mqtt") == 0, 10)
    finally:
        pub.stop()
        store.close()
        sub.stop()


def test_last_will_after_kill_9(tmp_path, mosquitto):  # noqa: F811
    cfg_path = tmp_path / "skysift.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "device_id": DEV, "storage": {"dir": str(tmp_path / "data")},
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "keepalive": 5},
    }))
    sub = Subscriber(mosquitto, [f"{BASE}/status"]).start()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "mqtt_runner.py"), str(cfg_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        sub.wait_for(lambda ms: any(m.json()["state"] == "online" for m in ms))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # the broker notices the dropped socket at once (or after 1.5 x keepalive) and publishes the will
        sub.wait_for(lambda ms: ms[-1].json()["state"] == "offline", timeout=20)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        sub.stop()
    late = Subscriber(mosquitto, [f"{BASE}/status"]).start()
    try:
        m = late.wait_for(lambda ms: ms and ms[-1])
        assert m.retain and m.json() == {"state": "offline", "device_id": DEV}
    finally:
        late.stop()


def test_tls_with_password_and_client_cert(tmp_path, mosquitto_tls, tiles):  # noqa: F811
    b = mosquitto_tls
    pw = tmp_path / "mqtt-password"
    pw.write_text(PASSWORD + "\n")
    tls = {"ca_file": str(b.tls.ca), "cert_file": str(b.tls.client_cert), "key_file": str(b.tls.client_key)}
    cfg = _cfg(tmp_path, b.port, username=USER, password_file=str(pw), tls=tls)
    sub = Subscriber(b, [f"{BASE}/#"]).start(ca_certs=str(b.tls.ca), cert_reqs=ssl.CERT_REQUIRED)
    store, ctx, pub = _start(cfg)
    try:
        assert pub.connected.wait(15), pub.last_error
        rows = [frame_row(p, "f1", label) for p, label in tiles[:3]]
        commit(ctx, store, rows)
        sub.wait_for(lambda ms: len(_frames(sub)) >= 3)
        assert wait_for(lambda: store.count_pending("mqtt") == 0, 10)
    finally:
        pub.stop()
        store.close()
        sub.stop()


def test_tls_wrong_password_or_untrusted_ca_is_refused(tmp_path, mosquitto_tls, monkeypatch, tiles):  # noqa: F811
    b = mosquitto_tls
    monkeypatch.setenv("SKYSIFT_MQTT_PASSWORD", "not-the-password")
    cfg = _cfg(tmp_path, b.port, username=USER, tls={"ca_file": str(b.tls.ca)})
    store, ctx, pub = _start(cfg)
    try:
        assert wait_for(lambda: pub.last_error is not None and "refused" in pub.last_error, 15)
        assert not pub.connected.is_set()
        # the agent keeps running: frames still commit and wait in the outbox
        commit(ctx, store, [frame_row(p, "f1", label) for p, label in tiles[:2]])
        assert store.count_pending("mqtt") == 2
    finally:
        pub.stop()
        store.close()
    # the right password but a CA that did not sign the broker's certificate: never connects
    monkeypatch.setenv("SKYSIFT_MQTT_PASSWORD", PASSWORD)
    cfg = _cfg(tmp_path, b.port, username=USER, tls={"ca_file": str(b.tls.other_ca)})
    store, ctx, pub = _start(cfg)
    try:
        assert wait_for(lambda: pub.last_error is not None, 15)
        assert not pub.connected.wait(2)
        assert store.count_pending("mqtt") == 2
    finally:
        pub.stop()
        store.close()


def test_telemetry_geotags_a_frame(tmp_path, mosquitto):  # noqa: F811
    cfg = _cfg(tmp_path, mosquitto.port, telemetry_topic="mavlink/drone-1/position", telemetry_max_age_s=5)
    sub = Subscriber(mosquitto, [f"{BASE}/status"]).start()
    store, ctx, pub = _start(cfg)
    try:
        assert pub.subscribed.wait(15)
        assert ctx.telemetry is pub.telemetry
        now = datetime.now(timezone.utc)
        t0 = now.timestamp()
        sub.publish("mavlink/drone-1/position", {"lat": 37.30, "lon": -122.00, "alt": 100.0, "time": t0})
        sub.publish("mavlink/drone-1/position", {"lat": 37.40, "lon": -122.10, "alt": 120.0, "time": t0 + 2})
        sub.publish("mavlink/drone-1/position", b"garbage")  # ignored, counted
        assert wait_for(lambda: getattr(pub.telemetry.latest(), "lat", None) == 37.40, 10)
        pos = ctx.telemetry.position_at(datetime.fromtimestamp(t0 + 1, tz=timezone.utc))
        assert pos.lat == pytest.approx(37.35) and pos.lon == pytest.approx(-122.05)
        assert wait_for(lambda: pub.telemetry.invalid >= 1, 10)
        # end to end through the agent's geotagger, for a frame without EXIF GPS
        exif = ExifInfo(lat=None, lon=None, alt=None, captured_at=None, orientation=None)
        captured = datetime.fromtimestamp(t0 + 2, tz=timezone.utc).isoformat().replace("+00:00", "Z")
        assert geotag(exif, captured, [ctx.telemetry]) == (37.40, -122.10, 120.0, "telemetry")
        stale = datetime.fromtimestamp(t0 + 60, tz=timezone.utc).isoformat()
        assert geotag(exif, stale, [ctx.telemetry])[3] == "none"
    finally:
        pub.stop()
        store.close()
        sub.stop()



def test_tls_client_certificate_when_the_broker_requires_one(tmp_path, monkeypatch):
    b = make_broker(tmp_path / "broker-mtls", tls=True, require_certificate=True).start()
    monkeypatch.setenv("SKYSIFT_MQTT_PASSWORD", PASSWORD)
    try:
        with_cert = {"ca_file": str(b.tls.ca), "cert_file": str(b.tls.client_cert),
                     "key_file": str(b.tls.client_key)}
        store, ctx, pub = _start(_cfg(tmp_path, b.port, username=USER, tls=with_cert))
        try:
            assert pub.connected.wait(15), pub.last_error
        finally:
            pub.stop()
            store.close()
        store, ctx, pub = _start(_cfg(tmp_path, b.port, username=USER, tls={"ca_file": str(b.tls.ca)}))
        try:
            assert wait_for(lambda: pub.last_error is not None, 15)
            assert not pub.connected.wait(1)
        finally:
            pub.stop()
            store.close()
    finally:
        b.stop()


def test_stop_waits_for_a_late_broker_and_sends_what_is_owed(tmp_path, tiles):
    """stop() before the first connection: within mqtt.drain_s the broker comes up, and the
    frames and the ended flight go out before the clean "offline"."""
    broker = make_broker(tmp_path / "broker")  # configured, not listening yet
    cfg = _cfg(tmp_path, broker.port, flight_summary_interval_s=60, drain_s=10)
    store, ctx, pub = _start(cfg)
    rows = [frame_row(p, "f1", label) for p, label in tiles[:3]]
    try:
        commit(ctx, store, rows)
        store.end_flight("f1")
        ctx.bus.publish("flight_ended", flight_id="f1")
        threading.Timer(1.0, broker.start).start()
        pub.stop()
        assert store.count_pending("mqtt") == 0  # every frame acknowledged during the drain
        late = Subscriber(broker, [f"{BASE}/status", f"{BASE}/flights/#"]).start()
        got = late.wait_for(lambda ms: len({m.topic for m in ms}) >= 2 and ms)
        late.stop()
        retained = {m.topic: m.json() for m in got if m.retain}
        assert retained[f"{BASE}/flights/f1"]["state"] == "ended", retained
        assert retained[f"{BASE}/status"]["state"] == "offline"
    finally:
        store.close()
        broker.stop()


def test_first_status_carries_the_frames_home_assistant_reads(tmp_path, mosquitto, tiles):  # noqa: F811
    cfg = _cfg(tmp_path, mosquitto.port, homeassistant_discovery=True)
    store = Store(cfg.db_path)
    ctx = make_ctx(cfg)
    commit(ctx, store, [frame_row(p, "f1", label) for p, label in tiles[:4]])  # a previous run
    sub = Subscriber(mosquitto, [f"{BASE}/status"]).start()
    pub = MqttPublisher(cfg)
    pub.start(ctx)
    try:
        first = sub.wait_for(lambda ms: ms and ms[0].json())
        assert first["state"] == "online" and first["frames"]["damaged"] == 4
    finally:
        pub.stop()
        store.close()
        sub.stop()
