"""`skysift station`: the ground station's live damage map.

End to end: two real agents (``python -m agent -c cfg run``, different device ids, folder
sources of shared tiles) publish to one real Mosquitto; a real ``skysift station`` process
stores what it hears and serves the page, which a headless Chromium (the fixtures of
test_report_browser.py) follows over Server-Sent Events. Then one agent is killed with -9 and
the broker's last will marks it offline on the page.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from mosquitto import Subscriber, mosquitto  # noqa: F401
from test_report_browser import Page, browser  # noqa: F401
from util import free_port, stop_pid, wait_port

from agent.core.config import Config
from agent.live.payloads import THUMBNAIL_MAX_B64, frame_message, frame_thumbnail
from agent.station import StationError, StationStore, StationSubscriber, parse_topic
from agent.station.server import read_token

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "station-test-token-0123456789"
#: where each device's "autopilot" says it is: about 300 m apart
POSITIONS = {"drone-a": (-17.7333, 168.3273), "drone-b": (-17.7310, 168.3290)}

pytestmark = pytest.mark.station


def test_topics_of_every_device_are_parsed():
    assert parse_topic("skysift", "skysift/drone-a/status") == ("drone-a", "status", None)
    assert parse_topic("skysift", "skysift/drone-a/frames") == ("drone-a", "frames", None)
    assert parse_topic("skysift", "skysift/drone-a/flights/Sector_7") == ("drone-a", "flights", "Sector_7")
    # command replies and other prefixes are not the station's
    assert parse_topic("skysift", "skysift/drone-a/cmd/status/reply") is None
    assert parse_topic("skysift", "other/drone-a/status") is None
    assert parse_topic("skysift", "skysift/drone-a/flights/x/y") is None


def test_the_lan_needs_a_token_file(tmp_path):
    with pytest.raises(StationError, match="--token-file"):
        read_token(None, "0.0.0.0")
    assert read_token(None, "127.0.0.1") is None
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(StationError, match="at least"):
        read_token(short, "0.0.0.0")
    good = tmp_path / "token"
    good.write_text(TOKEN + "\n")
    assert read_token(good, "0.0.0.0") == TOKEN


def test_cli_refuses_to_serve_the_lan_without_a_token(tmp_path):
    cfg = tmp_path / "station.yaml"
    cfg.write_text(yaml.safe_dump({"mqtt": {"host": "127.0.0.1", "port": free_port()}}))
    r = subprocess.run([sys.executable, "-m", "agent", "-c", str(cfg), "station", "--listen",
                        f"0.0.0.0:{free_port()}", "--db", str(tmp_path / "station.db")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--token-file" in r.stderr, r.stderr
    assert not (tmp_path / "station.db").exists()


def test_thumbnail_is_off_by_default_and_capped(tmp_path, aerial_tiles):
    row = {"frame_id": "f1", "status": "classified", "p_damaged": 0.9,
           "image_path": str(aerial_tiles["damaged"][0])}
    assert "thumbnail" not in frame_message(row)
    assert Config().mqtt.thumbnail_px == 0
    msg = frame_message(row, 96)
    jpeg = base64.b64decode(msg["thumbnail"], validate=True)
    assert jpeg[:2] == b"\xff\xd8" and len(msg["thumbnail"]) <= THUMBNAIL_MAX_B64
    # a large thumbnail of pure noise cannot fit in the cap: the message goes out without one
    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8))
    assert frame_thumbnail(str(noise), 64) is not None
    assert "thumbnail" not in frame_message({**row, "image_path": str(noise)}, 512)
    assert "thumbnail" not in frame_message({**row, "image_path": str(tmp_path / "gone.jpg")}, 96)
    assert "thumbnail" not in frame_message({**row, "image_path": None}, 96)


def test_station_store_keeps_each_devices_frames_once(tmp_path):
    store = StationStore(tmp_path / "station.db")
    sub = StationSubscriber(Config(mqtt={"host": "127.0.0.1"}).mqtt, store, lambda: None)
    frame = {"frame_id": "same-image", "flight_id": "F", "status": "classified", "label": "damaged",
             "thumbnail": base64.b64encode(b"\xff\xd8jpeg").decode()}
    for device in ("drone-a", "drone-b", "drone-a"):  # at least once: drone-a's comes twice
        assert sub.handle(f"skysift/{device}/frames", json.dumps(frame).encode())
    assert not sub.handle("skysift/drone-a/frames", b"not json")
    assert not sub.handle("skysift/drone-a/status", b"")  # a cleared retained topic
    assert sub.handle("skysift/drone-a/status", b'{"state":"offline","device_id":"drone-a"}')
    assert [(f["device_id"], f["has_thumbnail"]) for f in store.frames()] == [("drone-b", True), ("drone-a", True)]
    assert store.thumbnail("drone-a", "same-image") == b"\xff\xd8jpeg"
    assert [(d["device_id"], d["state"], d["frames"], d["damaged"]) for d in store.devices()] == [
        ("drone-a", "offline", 1, 1)]
    store.close()


def _agent_config(tmp_path: Path, device: str, port: int, thumbnail_px: int) -> Path:
    d = tmp_path / device
    (d / "inbox").mkdir(parents=True)
    cfg = d / "skysift.yaml"
    cfg.write_text(yaml.safe_dump({
        "device_id": device,
        "source": {"folder": str(d / "inbox"), "settle_seconds": 0.2, "rescan_seconds": 0.5},
        "storage": {"dir": str(d / "data"), "min_free_mb": 0},
        "model": {"devices": ["CPU"], "cache_dir": str(tmp_path / "ov-cache")},
        # keepalive 5 s (the least allowed): the broker sends the last will ~7.5 s after a kill
        "mqtt": {"host": "127.0.0.1", "port": port, "keepalive": 5, "thumbnail_px": thumbnail_px,
                 "telemetry_topic": f"mavlink/{device}/position", "flight_summary_interval_s": 0.5},
        "log_level": "info",
    }))
    return cfg


def _get(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def test_live_map_of_two_agents_then_one_killed(tmp_path, mosquitto, browser, aerial_tiles):  # noqa: F811
    token_file = tmp_path / "station.token"
    token_file.write_text(TOKEN + "\n")
    station_cfg = tmp_path / "station.yaml"
    station_cfg.write_text(yaml.safe_dump({"mqtt": {"host": "127.0.0.1", "port": mosquitto.port}}))
    port = free_port()
    origin = f"http://127.0.0.1:{port}/"
    procs: dict[str, subprocess.Popen] = {}
    sub = Subscriber(mosquitto, ["skysift/+/status"]).start()
    try:
        procs["station"] = _start([sys.executable, "-m", "agent", "-c", str(station_cfg), "station",
                                   "--listen", f"127.0.0.1:{port}", "--token-file", str(token_file),
                                   "--db", str(tmp_path / "station.db")], tmp_path / "station.log")
        wait_port(port, timeout=60)
        # the token is required, from the query or a header
        assert _get(origin) == 401 and _get(origin + "?token=wrong") == 401
        assert _get(origin + "data", {"Authorization": f"Bearer {TOKEN}"}) == 200

        for device, px in (("drone-a", 96), ("drone-b", 0)):
            cfg = _agent_config(tmp_path, device, mosquitto.port, px)
            procs[device] = _start([sys.executable, "-m", "agent", "-c", str(cfg), "run"], tmp_path / f"{device}.log")

        page = Page(browser)
        page.load(origin + "?token=" + TOKEN)
        page.wait_for("window.skysiftStation && skysiftStation.devices['drone-a'] === 'online'"
                      " && skysiftStation.devices['drone-b'] === 'online'", timeout=180)

        # each "autopilot" says where it is (retained: the agent gets it whenever it subscribed),
        # then the same three shared tiles land in each agent's watched folder
        t = time.time() - 1
        for device, (lat, lon) in POSITIONS.items():
            sub.client.publish(f"mavlink/{device}/position", json.dumps({"lat": lat, "lon": lon, "alt": 80.0, "time": t}),
                               qos=1, retain=True).wait_for_publish(10)
        time.sleep(1.5)
        shown = time.monotonic()
        tiles = aerial_tiles["damaged"][:2] + aerial_tiles["undamaged"][:1]
        for device in POSITIONS:
            flight = tmp_path / device / "inbox" / "sector-7"
            flight.mkdir()
            for src in tiles:
                shutil.copy(src, flight / src.name)
                os.utime(flight / src.name, (t, t))
        page.wait_for("skysiftReport.frames === 6 && skysiftReport.markers === 6", timeout=60)
        took = time.monotonic() - shown
        state = page.eval("({rows: [...document.querySelectorAll('#devices tbody tr')].map(r => [r.dataset.device, r.dataset.state]),"
                          " flights: document.querySelectorAll('#flights tbody tr').length, thumbs: skysiftStation.thumbs,"
                          " updates: skysiftStation.updates, error: skysiftReport.error})")
        assert state["rows"] == [["drone-a", "online"], ["drone-b", "online"]], state
        assert state["flights"] == 2 and state["error"] is None, state
        assert state["thumbs"] == 3, state  # drone-a sends thumbnails, drone-b does not
        assert state["updates"] > 1  # drawn from events, not from a reload
        # drone-a's damaged frames in the gallery show the thumbnail it sent
        page.wait_for("[...document.querySelectorAll('#gallery img')].filter(i => i.complete && i.naturalWidth > 0"
                      " && i.src.includes('/thumb/drone-a/')).length === 2", timeout=10)
        page.screenshot(tmp_path / "station.png")
        shutil.copy(tmp_path / "station.png", os.environ.get("SKYSIFT_STATION_SCREENSHOT", tmp_path / "copy.png"))
        assert (tmp_path / "station.png").stat().st_size > 20_000
        print(f"frames on the page {took:.1f} s after the files landed")

        os.kill(procs["drone-b"].pid, signal.SIGKILL)
        procs["drone-b"].wait(10)
        page.wait_for("skysiftStation.devices['drone-b'] === 'offline'", timeout=30)
        assert page.eval("skysiftStation.devices['drone-a']") == "online"
        assert page.eval("document.querySelector('#devices tr[data-device=\"drone-b\"]').dataset.state") == "offline"
        assert page.eval("skysiftReport.markers") == 6  # its frames stay on the map
        leaks = [u for u in page.requested_urls() if not u.startswith((origin, "data:"))]
        assert leaks == [] and page.errors() == [], (leaks, page.errors())
    finally:
        for name, proc in procs.items():
            if name == "station":
                stop_pid(proc)
            elif proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        sub.stop()
