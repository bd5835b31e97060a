"""Damage on ATAK over Cursor on Target: the events, and a real TAK server (taky) receiving them."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from mosquitto import make_tls_files
from takserver import CotClient, Taky
from util import stop_pid

from agent.core.config import Config, parse_config
from agent.core.errors import ConfigError
from agent.core.events import EventBus
from agent.core.runtime import AgentContext, Stats
from agent.live.cot import COT_TYPE, UNKNOWN, distance_m, event_xml, markers
from agent.live.tak import TakSender
from agent.store.db import Store
from models.card import load_card
from sync.pending import TAK, backlog

LON, LAT = 8.5417, 47.3769
#: about 10 m a tile: 0.0001 deg of latitude is 11.1 m
STEP = 0.0001


def _grid_row(frame_id: str, grid: list[list[float | None]], placed: bool = True, **extra: Any) -> dict[str, Any]:
    rows, cols = len(grid), len(grid[0])
    centers = [[[LON + (c + 0.5) * STEP, LAT - (r + 0.5) * STEP] for c in range(cols)] for r in range(rows)]
    corners = [[[LON + c * STEP, LAT - r * STEP] for c in range(cols + 1)] for r in range(rows + 1)]
    row = {
        "frame_id": frame_id, "flight_id": "sector-7", "source": "test", "status": "classified",
        "label": "damaged" if any(p is not None and p >= 0.5 for line in grid for p in line) else "undamaged",
        "p_damaged": max(p for line in grid for p in line if p is not None), "tile_grid": grid,
        "lat": LAT, "lon": LON, "captured_at": "2026-05-01T10:00:00+00:00",
        "tile_centers": centers if placed else None, "tile_corners": corners if placed else None,
    }
    row.update(extra)
    return row


def _cfg(tmp_path: Path, **tak: Any) -> Config:
    return parse_config({"device_id": "drone1", "storage": {"dir": str(tmp_path / "data")},
                         "tak": {"enabled": True, **tak}})


# --- the events (no server) ------------------------------------------------------------------
def test_a_tile_is_damaged_by_the_threshold_given():
    row = _grid_row("f1", [[0.2, 0.7], [0.95, None]])
    assert [m.tile for m in markers(row, "drone1", "tiles", 0.6)] == [(0, 1), (1, 0)]
    assert [m.tile for m in markers(row, "drone1", "tiles", 0.9)] == [(1, 0)]
    assert [m.uid for m in markers(row, "drone1", "tiles", 0.9)] == ["skysift-drone1-f1-1-0"]
    # frames: one marker per frame the pipeline labelled damaged
    assert [m.uid for m in markers(row, "drone1", "frames", 0.9)] == ["skysift-drone1-f1"]
    assert list(markers(dict(row, label="undamaged"), "drone1", "frames", 0.1)) == []
    assert list(markers(dict(row, status="rejected"), "drone1", "tiles", 0.1)) == []


def test_the_sender_takes_the_threshold_from_the_model_card(tmp_path: Path):
    card = load_card(None)
    # the card's cut as a p(damaged): the shipped model's output is p(undamaged), so its raw
    # threshold would mark the wrong tiles
    assert TakSender(_cfg(tmp_path)).threshold == card.p_damaged_threshold
    assert card.output_is_p_undamaged and card.p_damaged_threshold == pytest.approx(1 - card.threshold)


def test_positions_and_their_error():
    row = _grid_row("f1", [[0.9, 0.1]])
    (m,) = markers(row, "d", "tiles", 0.5)
    assert m.lonlat == row["tile_centers"][0][0]
    # ce: from the tile's centre to its corner, half a diagonal of about 7.6 m x 11.1 m
    assert m.ce == pytest.approx(distance_m(m.lonlat, [LON, LAT]), abs=0.1)
    assert 6 < m.ce < 8
    # a tile not placed on the ground yet: the frame's position, its footprint as the bound
    foot = {"type": "Polygon", "coordinates": [[[LON - STEP, LAT - STEP], [LON + STEP, LAT - STEP],
                                                [LON + STEP, LAT + STEP], [LON - STEP, LAT + STEP]]]}
    (m,) = markers(_grid_row("f2", [[0.9]], placed=False, footprint=foot), "d", "tiles", 0.5)
    assert m.lonlat == [LON, LAT] and 12 < m.ce < 15
    (m,) = markers(_grid_row("f3", [[0.9]], placed=False), "d", "tiles", 0.5)
    assert m.ce == UNKNOWN  # no footprint: CoT's "unknown"
    # nowhere on the ground at all: no marker rather than one at 0,0
    assert list(markers(_grid_row("f4", [[0.9]], placed=False, lat=None, lon=None), "d", "tiles", 0.5)) == []


def _check_event(ev: ET.Element, uid: str, row: dict[str, Any], tile: tuple[int, int], p: float,
                 stale_s: float = 3600.0) -> None:
    assert ev.get("uid") == uid and ev.get("type") == COT_TYPE
    point = ev.find("point")
    assert point is not None
    lon, lat = row["tile_centers"][tile[0]][tile[1]]
    assert float(point.get("lat")) == pytest.approx(lat, abs=1e-7)
    assert float(point.get("lon")) == pytest.approx(lon, abs=1e-7)
    assert 6 < float(point.get("ce")) < 8
    assert float(point.get("le")) == UNKNOWN and float(point.get("hae")) == UNKNOWN
    t = dt.datetime.fromisoformat(ev.get("time").replace("Z", "+00:00"))
    stale = dt.datetime.fromisoformat(ev.get("stale").replace("Z", "+00:00"))
    assert abs((dt.datetime.now(dt.timezone.utc) - t).total_seconds()) < 120
    assert (stale - t).total_seconds() == pytest.approx(stale_s, abs=0.1)
    assert ev.get("start").startswith("2026-05-01T10:00:00")
    remarks = ev.find("detail/remarks").text
    assert f"p_damaged={p:.4f}" in remarks and "flight=sector-7" in remarks and "device=drone1" in remarks


def test_event_xml():
    row = _grid_row("f1", [[0.1, 0.875]])
    (m,) = markers(row, "drone1", "tiles", 0.5)
    now = dt.datetime.now(dt.timezone.utc)
    ev = ET.fromstring(event_xml(m, "skysift-drone1", 600, now))
    _check_event(ev, "skysift-drone1-f1-0-1", row, (0, 1), 0.875, stale_s=600)
    assert ev.find("detail/contact").get("callsign") == "skysift-drone1 damage 88%"


@pytest.mark.parametrize("tak, why", [
    ({"url": "http://h:80"}, "scheme"),
    ({"url": "tcp://h"}, "port"),
    ({"url": "tcp://h:70000"}, "port"),
    ({"url": "tcp://h:1/path"}, "only scheme://host:port"),
    ({"url": "tls://h:8089"}, "tls:// needs"),
    ({"url": "tcp://h:8087", "tls": {"ca_file": "ca.crt"}}, "only with a tls://"),
    ({"what": "pixels"}, "what"),
    ({"stale_s": 0}, "stale_s"),
    ({"multicast_ttl": 0}, "multicast_ttl"),
    ({"urll": "tcp://h:1"}, "urll"),
])
def test_bad_tak_settings_are_refused(tak: dict, why: str):
    with pytest.raises(ConfigError, match=why):
        parse_config({"tak": tak})


def test_the_backlog_counts_the_tak_outbox(tmp_path: Path):
    cfg = _cfg(tmp_path)
    store = Store(cfg.db_path)
    store.add_frames([_grid_row("f1", [[0.9]]), _grid_row("f2", [[0.1]])])
    assert backlog(cfg, store)[TAK] == 2
    store.mark_delivered(TAK, ["f1"])
    assert backlog(cfg, store)[TAK] == 1
    assert TAK not in backlog(_cfg(tmp_path, enabled=False), store)
    store.close()


# --- a real TAK server ------------------------------------------------------------------------
def _start(cfg: Config) -> TakSender:
    sender = TakSender(cfg)
    sender.start(AgentContext(cfg=cfg, bus=EventBus(), stats=Stats(), stop=threading.Event()))
    return sender


def _wait(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)


@pytest.mark.tak
def test_taky_receives_the_markers_and_nothing_is_lost_in_an_outage(tmp_path: Path):
    server = Taky(tmp_path / "taky").start()
    cfg = _cfg(tmp_path, url=f"tcp://127.0.0.1:{server.port}")
    store = Store(cfg.db_path)
    first = _grid_row("f1", [[0.2, 0.9], [0.8, 0.1]])
    store.add_frames([first, _grid_row("f0", [[0.1]])])
    client = CotClient(server.port)
    sender = _start(cfg)
    try:
        events = {e.get("uid"): e for e in client.receive(2)}
        _check_event(events["skysift-drone1-f1-0-1"], "skysift-drone1-f1-0-1", first, (0, 1), 0.9)
        _check_event(events["skysift-drone1-f1-1-0"], "skysift-drone1-f1-1-0", first, (1, 0), 0.8)
        _wait(lambda: store.count_pending(TAK) == 0)  # the undamaged frame is done too
        # The server goes away; frames committed meanwhile wait in the outbox.
        client.close()
        server.stop()
        _wait(lambda: not sender.connected.is_set())
        later = [_grid_row(f"g{i}", [[0.95]]) for i in range(3)]
        store.add_frames(later)
        time.sleep(1.0)
        assert store.count_pending(TAK) == 3
        server.start()  # same port: the sender reconnects with its backoff
        client = CotClient(server.port)
        uids = {e.get("uid") for e in client.receive(3, timeout=60)}
        assert uids == {f"skysift-drone1-g{i}-0-0" for i in range(3)}
        _wait(lambda: store.count_pending(TAK) == 0)
    finally:
        sender.stop()
        client.close()
        server.stop()
        store.close()


@pytest.mark.tak
def test_tls_with_client_certificates(tmp_path: Path):
    tls = make_tls_files(tmp_path / "tls")
    server = Taky(tmp_path / "taky", tls=tls).start()
    url = f"tls://127.0.0.1:{server.port}"
    files = {"cert_file": str(tls.client_cert), "key_file": str(tls.client_key)}
    # A sender that does not trust the server's certificate sends nothing; its frames wait.
    untrusting = _cfg(tmp_path / "a", url=url, tls={"ca_file": str(tls.other_ca), **files})
    store = Store(untrusting.db_path)
    store.add_frames([_grid_row("f1", [[0.9]])])
    sender = _start(untrusting)
    time.sleep(2.0)
    assert not sender.connected.is_set() and store.count_pending(TAK) == 1
    sender.stop()
    store.close()
    # The right CA and a client certificate the server's CA signed: delivered.
    cfg = _cfg(tmp_path / "b", url=url, tls={"ca_file": str(tls.ca), **files})
    store = Store(cfg.db_path)
    row = _grid_row("f2", [[0.1, 0.9]])
    store.add_frames([row])
    client = CotClient(server.port, tls=tls)
    sender = _start(cfg)
    try:
        (ev,) = client.receive(1)
        _check_event(ev, "skysift-drone1-f2-0-1", row, (0, 1), 0.9)
        _wait(lambda: store.count_pending(TAK) == 0)
    finally:
        sender.stop()
        client.close()
        server.stop()
        store.close()


# --- multicast SA, off loopback ------------------------------------------------------------------
GROUP, SA_PORT = "239.2.3.1", 6969
RECEIVER = f"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{GROUP}", {SA_PORT}))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton("{GROUP}") + socket.inet_aton(sys.argv[1]))
s.settimeout(30)
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    data, (host, port) = s.recvfrom(65536)
    print(host, data.hex(), flush=True)
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def two_namespaces():
    """Two network namespaces joined by a veth pair (10.77.0.1 and .2): a real link, not loopback."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    a, b = f"sks{os.getpid()}a", f"sks{os.getpid()}b"
    try:
        _ip("netns", "add", a)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.decode().strip()}")
    try:
        _ip("netns", "add", b)
        _ip("link", "add", "vA", "netns", a, "type", "veth", "peer", "name", "vB", "netns", b)
        for ns, dev, addr in ((a, "vA", "10.77.0.1/24"), (b, "vB", "10.77.0.2/24")):
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        # no default route in a fresh namespace: multicast goes out of the veth
        _ip("-n", a, "route", "add", "224.0.0.0/4", "dev", "vA")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.tak
def test_multicast_sa_reaches_a_listener_on_another_host(tmp_path: Path, two_namespaces):
    sender_ns, listener_ns = two_namespaces
    cfg_file = tmp_path / "skysift.yaml"
    cfg_file.write_text(
        f"device_id: drone1\nstorage:\n  dir: {tmp_path / 'data'}\n"
        f"tak:\n  enabled: true\n  url: udp://{GROUP}:{SA_PORT}\n", encoding="utf-8")
    cfg = parse_config({"storage": {"dir": str(tmp_path / "data")}})
    store = Store(cfg.db_path)
    row = _grid_row("f1", [[0.9, 0.2, 0.7]])
    store.add_frames([row])
    store.close()
    listener = subprocess.Popen(["ip", "netns", "exec", listener_ns, sys.executable, "-c", RECEIVER,
                                 "10.77.0.2", "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "ready"
        sent = subprocess.run(["ip", "netns", "exec", sender_ns, sys.executable,
                               str(Path(__file__).with_name("tak_send.py")), str(cfg_file)],
                              timeout=60, capture_output=True, text=True)
        assert sent.returncode == 0, sent.stderr
        out, _ = listener.communicate(timeout=30)
    finally:
        stop_pid(listener)
    lines = [line.split() for line in out.splitlines()]
    assert [host for host, _ in lines] == ["10.77.0.1", "10.77.0.1"]  # from the other namespace
    events = {e.get("uid"): e for e in (ET.fromstring(bytes.fromhex(h)) for _, h in lines)}
    _check_event(events["skysift-drone1-f1-0-0"], "skysift-drone1-f1-0-0", row, (0, 0), 0.9)
    _check_event(events["skysift-drone1-f1-0-2"], "skysift-drone1-f1-0-2", row, (0, 2), 0.7)
