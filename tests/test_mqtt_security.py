"""MQTT commands that must be refused (retained, oversized, bursts, unsigned or replayed), TLS
failures that must be named, and the broker ACL of docs/mosquitto-acl.example, against a real
Mosquitto (tests/mosquitto.py)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from mosquitto import (  # noqa: F401
    MOSQUITTO,
    PASSWORD,
    USER,
    Subscriber,
    make_broker,
    make_password_file,
    mosquitto,
    mosquitto_tls,
)
from mqtt_runner import start_publisher as _start
from paho.mqtt.enums import CallbackAPIVersion

from agent.core.config import parse_config
from agent.core.errors import ConfigError
from agent.core.events import EventBus
from agent.core.runtime import AgentContext, Stats
from agent.live.auth import AuthError, CommandAuth, load_key, sign_command
from agent.live.commands import MAX_COMMAND_BYTES, CommandDispatcher, CommandGate, RefusalLog
from agent.live.mqtt import MqttPublisher
from agent.store.db import Store, wait_for

ROOT = Path(__file__).resolve().parents[1]
DEV = "drone-1"
BASE = f"skysift/{DEV}"
KEY = b"0123456789abcdef0123456789abcdef"


def _cfg(tmp_path: Path, port: int | None = None, device: str = DEV, **mqtt_cfg):
    return parse_config({
        "device_id": device,
        "storage": {"dir": str(tmp_path / "data")},
        "mqtt": {"host": "127.0.0.1", "port": port or 1883, **mqtt_cfg},
    })


class Clock:
    def __init__(self, t: float = 1_764_158_400.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _dispatcher(tmp_path: Path) -> tuple[CommandDispatcher, list]:
    ctx = AgentContext(cfg=_cfg(tmp_path), bus=EventBus(), stats=Stats(), stop=threading.Event())
    calls: list = []
    ctx.commands["flight_start"] = lambda name=None: calls.append(name) or f"id-{name}"
    return CommandDispatcher(ctx, status_now=lambda: {"state": "online"}), calls


def test_flight_names_are_bounded(tmp_path):
    d, calls = _dispatcher(tmp_path)
    for bad, why in (("x" * 100_000, "too long"), ("x" * 65, "too long"), ("a/b", "forbidden"),
                     ("a+b", "forbidden"), ("a#", "forbidden"), ("a\x00b", "forbidden"),
                     ("line\nbreak", "forbidden")):
        r = d.handle("flight/start", json.dumps({"name": bad}).encode())
        assert r["ok"] is False and why in r["error"], bad[:20]
    assert calls == []
    r = d.handle("flight/start", json.dumps({"name": "  " + "S" * 64 + " "}).encode())
    assert r["ok"] is True and calls == ["S" * 64]


def test_gate_refuses_retained_oversized_and_bursts():
    clock = Clock(0.0)
    gate = CommandGate(rate=1.0, burst=3, clock=clock)
    kind, reason, reply = gate.check("flight/start", b"{}", retained=True)
    assert kind == "retained" and "ignored" in reason and reply
    kind, reason, reply = gate.check("flight/start", b"x" * (MAX_COMMAND_BYTES + 1), retained=False)
    assert kind == "size" and "too large" in reason and reply
    assert [gate.check("flight/start", b"", False) for _ in range(3)] == [None] * 3
    verdicts = [gate.check("flight/start", b"", False) for _ in range(1000)]
    assert verdicts[0][:1] == ("rate",) and verdicts[0][2] is True  # the burst gets one reply
    assert all(v is not None and v[2] is False for v in verdicts[1:])
    assert gate.check("status", b"", False) is None  # per topic: other commands still pass
    clock.t += 1.0
    assert gate.check("flight/start", b"", False) is None
    assert gate.check("flight/start", b"", False)[2] is True  # a new burst, a new reply


def test_refusal_log_is_one_line_then_a_summary(caplog):
    caplog.set_level(logging.WARNING, logger="t.refusals")
    clock = Clock(0.0)
    rl = RefusalLog(logging.getLogger("t.refusals"), every_s=60.0, clock=clock)
    for _ in range(1000):
        rl.refused("rate", "flight/start", "rate limited")
    assert len(caplog.records) == 1 and rl.counts["rate"] == 1000
    rl.refused("size", "x" * 10_000, "too large")  # another kind: its own first line, name cut
    assert len(caplog.records) == 2 and len(caplog.records[1].getMessage()) < 200
    clock.t = 61.0
    rl.refused("rate", "flight/start", "rate limited")
    assert len(caplog.records) == 3 and "999 more" in caplog.records[2].getMessage()


def _auth(clock: Clock, device: str = DEV) -> CommandAuth:
    return CommandAuth(KEY, device, max_age_s=30.0, clock=clock)


def test_signed_commands_are_checked():
    clock = Clock()
    auth = _auth(clock)
    topic = f"{BASE}/cmd/flight/start"
    env = sign_command(KEY, DEV, topic, '{"name": "S7"}', ts=int(clock.t))
    assert auth.open(topic, env) == b'{"name": "S7"}'
    with pytest.raises(AuthError, match="replayed"):
        auth.open(topic, env)
    with pytest.raises(AuthError, match="unsigned"):
        auth.open(topic, b'{"name": "S7"}')
    with pytest.raises(AuthError, match="unsigned"):
        auth.open(topic, b"")
    with pytest.raises(AuthError, match="stale"):
        auth.open(topic, sign_command(KEY, DEV, topic, "", ts=int(clock.t) - 31))
    with pytest.raises(AuthError, match="'ts'"):
        auth.open(topic, sign_command(KEY, DEV, topic, "", ts=2**62))
    with pytest.raises(AuthError, match="bad signature"):  # meant for another device
        auth.open(topic, sign_command(KEY, "drone-2", topic, "", ts=int(clock.t)))
    with pytest.raises(AuthError, match="bad signature"):  # meant for another command
        auth.open(topic, sign_command(KEY, DEV, f"{BASE}/cmd/flight/end", "", ts=int(clock.t)))
    with pytest.raises(AuthError, match="bad signature"):  # another key
        auth.open(topic, sign_command(b"k" * 32, DEV, topic, "", ts=int(clock.t)))
    tampered = json.loads(sign_command(KEY, DEV, topic, '{"name": "a"}', ts=int(clock.t)))
    tampered["body"] = '{"name": "b"}'
    with pytest.raises(AuthError, match="bad signature"):
        auth.open(topic, json.dumps(tampered).encode())
    with pytest.raises(AuthError, match="nonce"):
        auth.open(topic, sign_command(KEY, DEV, topic, "", ts=int(clock.t), nonce="a/b"))
    # a nonce is forgotten once its envelope would be refused as stale anyway
    clock.t += 31
    assert auth.open(topic, sign_command(KEY, DEV, topic, "", ts=int(clock.t))) == b""
    assert len(auth._nonces) == 1  # the first one's was dropped


def test_command_key_file(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert load_key(_cfg(tmp_path).mqtt) is None
    (tmp_path / "key").write_bytes(KEY + b"\n")
    assert load_key(_cfg(tmp_path, command_key_file=str(tmp_path / "key")).mqtt) == KEY
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "command-key").write_bytes(KEY)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_key(_cfg(tmp_path, command_key_file="command-key").mqtt) == KEY
    (tmp_path / "short").write_text("short\n")
    with pytest.raises(ConfigError, match="command_key_file"):
        load_key(_cfg(tmp_path, command_key_file=str(tmp_path / "short")).mqtt)
    with pytest.raises(ConfigError, match="command_key_file"):
        MqttPublisher(_cfg(tmp_path, command_key_file=str(tmp_path / "missing")))


# --- against a real broker ------------------------------------------------------------------------

def _flights(store: Store) -> list[str]:
    return [r[0] for r in store.db.execute("SELECT flight_id FROM flights ORDER BY flight_id")]


class Asker:
    def __init__(self, sub: Subscriber, base: str = BASE):
        self.sub, self.base = sub, base

    def replies(self, name: str) -> list[dict]:
        return [m.json() for m in self.sub.on(f"{self.base}/cmd/{name}/reply")]

    def ask(self, name: str, payload: bytes | str | dict = b"") -> dict:
        n = len(self.replies(name))
        self.sub.publish(f"{self.base}/cmd/{name}", payload)
        return self.sub.wait_for(lambda ms: len(self.replies(name)) > n and self.replies(name)[-1])


def test_retained_and_oversized_commands_are_refused(tmp_path, mosquitto):  # noqa: F811
    sub = Subscriber(mosquitto, [f"{BASE}/cmd/#"]).start()
    assert sub.client is not None
    # `mosquitto_pub -r`: without the fix this flight started again at every start of the agent
    sub.client.publish(f"{BASE}/cmd/flight/start", json.dumps({"name": "old"}), qos=1,
                       retain=True).wait_for_publish(10)
    store, ctx, pub = _start(_cfg(tmp_path, mosquitto.port))
    asker = Asker(sub)
    try:
        r = sub.wait_for(lambda ms: asker.replies("flight/start") and asker.replies("flight/start")[0])
        assert r["ok"] is False and "retained" in r["error"]
        r = asker.ask("flight/start", {"name": "N" * 100_000})
        assert r["ok"] is False and "too large" in r["error"]
        r = asker.ask("flight/start", {"name": "N" * 200})
        assert r["ok"] is False and "too long" in r["error"]
        r = asker.ask("flight/start", {"name": "fresh"})
        assert r["ok"] is True
        assert _flights(store) == ["fresh"]
    finally:
        pub.stop()
        store.close()
        sub.stop()


def test_a_command_burst_is_rate_limited(tmp_path, mosquitto, caplog):  # noqa: F811
    caplog.set_level(logging.INFO, logger="agent.live")
    sub = Subscriber(mosquitto, [f"{BASE}/cmd/#"]).start()
    assert sub.client is not None
    store, ctx, pub = _start(_cfg(tmp_path, mosquitto.port, command_rate=1.0, command_burst=5))
    asker = Asker(sub)
    try:
        assert pub.subscribed.wait(15)
        for i in range(2000):
            sub.client.publish(f"{BASE}/cmd/flight/start", json.dumps({"name": f"b{i}"}), qos=0)
        sub.publish(f"{BASE}/cmd/flight/start", {"name": "last"})  # qos 1: all of them are out

        def rate_limited(ms):
            return [r for r in asker.replies("flight/start") if "rate limited" in r.get("error", "")]

        sub.wait_for(rate_limited)
        # the burst, and at most a few more as the bucket refills while the burst arrives
        assert 5 <= len(_flights(store)) <= 15, len(_flights(store))
        refused = [r for r in caplog.records if "refused" in r.getMessage()]
        assert 1 <= len(refused) <= 2, [r.getMessage() for r in refused]
        assert len(asker.replies("flight/start")) < 30  # one reply per burst, not per drop
        pub._stop.wait(1.5)
        assert asker.ask("status")["ok"] is True  # still answering
    finally:
        pub.stop()
        store.close()
        sub.stop()


def test_signed_commands_through_the_broker(tmp_path, mosquitto):  # noqa: F811
    key_file = tmp_path / "command-key"
    key_file.write_bytes(KEY + b"\n")
    sub = Subscriber(mosquitto, [f"{BASE}/cmd/#"]).start()
    store, ctx, pub = _start(_cfg(tmp_path, mosquitto.port, command_key_file=str(key_file)))
    asker = Asker(sub)
    topic = f"{BASE}/cmd/flight/start"
    try:
        assert pub.subscribed.wait(15)
        r = asker.ask("flight/start", {"name": "unsigned"})
        assert r["ok"] is False and "unsigned" in r["error"]
        env = sign_command(KEY, DEV, topic, json.dumps({"name": "signed", "id": "q1"}))
        r = asker.ask("flight/start", env)
        assert r["ok"] is True and r["id"] == "q1"
        r = asker.ask("flight/start", env)
        assert r["ok"] is False and "replayed" in r["error"]
        r = asker.ask("flight/start", sign_command(KEY, "drone-2", topic, json.dumps({"name": "x"})))
        assert r["ok"] is False and "signature" in r["error"]
        assert _flights(store) == ["signed"]
    finally:
        pub.stop()
        store.close()
        sub.stop()


def _tls_failure_shown(tmp_path, broker, ca, caplog, expect: str) -> None:
    """The agent's log and `skysift status` name the certificate problem ``expect``."""
    from agent.service.state_file import StateFile
    from agent.service.status import collect, format_text

    caplog.set_level(logging.WARNING, logger="agent.live.mqtt")
    cfg = _cfg(tmp_path, broker.port, username=USER, tls={"ca_file": str(ca)})
    store, ctx, pub = _start(cfg)
    sf = StateFile(interval_s=60)
    sf.start(ctx)
    try:
        assert wait_for(lambda: pub.last_error is not None, 15)
        assert pub.last_error.startswith("TLS certificate verification failed") and expect in pub.last_error
        lines = [r.getMessage() for r in caplog.records if r.name == "agent.live.mqtt"]
        assert any(expect in line for line in lines), lines
        assert not any("cannot reach" in line for line in lines), lines
        assert wait_for(lambda: ctx.stats.mqtt is not None and ctx.stats.mqtt.last_error == pub.last_error, 10)
        sf.write()
        text = format_text(collect(cfg))
        link = [line for line in text.splitlines() if line.startswith("link      mqtt down")]
        assert link and "TLS certificate verification failed" in link[0] and expect in link[0], text
    finally:
        sf.stop()
        pub.stop()
        store.close()


def test_tls_unknown_ca_is_named(tmp_path, mosquitto_tls, monkeypatch, caplog):  # noqa: F811
    monkeypatch.setenv("SKYSIFT_MQTT_PASSWORD", PASSWORD)
    b = mosquitto_tls
    _tls_failure_shown(tmp_path, b, b.tls.other_ca, caplog, "self-signed certificate in certificate chain")


def test_tls_wrong_host_name_is_named(tmp_path, monkeypatch, caplog):
    b = make_broker(tmp_path / "broker-name", tls=True, server_names=["broker.elsewhere.example"]).start()
    monkeypatch.setenv("SKYSIFT_MQTT_PASSWORD", PASSWORD)
    try:
        _tls_failure_shown(tmp_path, b, b.tls.ca, caplog, "mismatch")
    finally:
        b.stop()


def test_broker_down_is_one_line_not_one_per_retry(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="agent.live")
    broker = make_broker(tmp_path / "broker")  # configured, not started: nothing listens yet
    store, ctx, pub = _start(_cfg(tmp_path, broker.port))
    try:
        assert wait_for(lambda: pub._conn_log.failures >= 3, 20)  # paho retried (1 s, 2 s, ...)
        loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert [r.name for r in loud] == ["agent.live.mqtt"], [(r.name, r.getMessage()) for r in loud]
        assert "cannot reach the broker" in loud[0].getMessage()
        broker.start()
        assert pub.connected.wait(40)
        assert any("recovered" in r.getMessage() for r in caplog.records)
    finally:
        pub.stop()
        store.close()
        broker.stop()


def _client(port: int, user: str | None, password: str | None) -> tuple[mqtt.Client, int]:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-{user}")
    if user:
        c.username_pw_set(user, password)
    connected: list = []
    c.on_connect = lambda client, userdata, flags, rc, props: connected.append(rc)
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert wait_for(lambda: connected, 10)
    return c, connected[0]


def test_the_acl_example_keeps_devices_to_their_own_commands(tmp_path, monkeypatch):
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    users = {"drone-7": "pw-7", "drone-8": "pw-8", "ground": "pw-g"}
    passwd = make_password_file(tmp_path / "passwd", "mavlink-bridge", "pw-b", more=users)
    broker = make_broker(tmp_path / "broker", password_file=passwd,
                         acl_file=ROOT / "docs" / "mosquitto-acl.example").start()
    monkeypatch.setenv("SKYSIFT_MQTT_PASSWORD", "pw-8")
    base8 = "skysift/drone-8"
    ground = Subscriber(broker, [f"{base8}/#"], auth=("ground", "pw-g")).start()
    cfg = _cfg(tmp_path, broker.port, device="drone-8", username="drone-8")
    store, ctx, pub = _start(cfg)
    other = None
    try:
        assert pub.subscribed.wait(15), pub.last_error  # the device reads its cmd/
        ground.wait_for(lambda ms: ground.on(f"{base8}/status"))  # and writes its status
        other, rc = _client(broker.port, "drone-7", "pw-7")
        assert not rc.is_failure
        other.publish(f"{base8}/cmd/flight/start", json.dumps({"name": "hijack"}), qos=1).wait_for_publish(10)
        anon, rc = _client(broker.port, None, None)
        anon.loop_stop()
        assert rc.is_failure  # anonymous clients cannot connect at all
        r = Asker(ground, base8).ask("flight/start", {"name": "ground"})
        assert r["ok"] is True
        assert _flights(store) == ["ground"]
        # drone-7's command never reached anyone (the broker dropped it), not even the ground
        assert [m.json()["name"] for m in ground.on(f"{base8}/cmd/flight/start")] == ["ground"]
    finally:
        if other is not None:
            other.disconnect()
            other.loop_stop()
        pub.stop()
        store.close()
        ground.stop()
        broker.stop()
