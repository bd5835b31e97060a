"""Frames with ExifTool-written DJI XMP, through `skysift run --once` and `skysift classify --json`:
every frame and tile located on the ground, and bad metadata costing a field, never the frame."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from agent.imaging.ground import geodetic_to_enu

ROOT = Path(__file__).resolve().parents[1]
needs_exiftool = pytest.mark.skipif(
    shutil.which("exiftool") is None, reason="exiftool not installed (apt libimage-exiftool-perl)"
)
LAT0, LON0, MSL0, AGL = 47.3769, 8.5417, 450.0, 50.0
W, H, TILE, F_PX = 512, 384, 128, 400.0  # a known lens: 400 px focal length, centred
BOMB = b"""<?xpacket begin=''?><!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<x:xmpmeta xmlns:x="adobe:ns:meta/">&lol2;</x:xmpmeta>"""


def _frame(path: Path, aerial: Path, *dji: str) -> Path:
    """A real aerial tile scaled to W x H, tagged by ExifTool with DJI XMP."""
    import cv2

    cv2.imwrite(str(path), cv2.resize(cv2.imread(str(aerial)), (W, H)))
    if dji:
        tags = [f"-XMP-drone-dji:{t}" for t in dji]
        subprocess.run(["exiftool", "-q", "-overwrite_original", *tags, str(path)],
                       check=True, capture_output=True)
    return path


def _nadir(path: Path, aerial: Path, *extra: str) -> Path:
    return _frame(path, aerial, f"GpsLatitude={LAT0}", f"GpsLongitude={LON0}",
                  f"AbsoluteAltitude=+{MSL0}", f"RelativeAltitude=+{AGL}", "GimbalYawDegree=0",
                  "GimbalRollDegree=0", f"CalibratedFocalLength={F_PX}", *extra)


def _with_app1(path: Path, aerial: Path, packet: bytes) -> Path:
    """A frame whose only XMP is ``packet``, in a JPEG APP1 segment right after SOI."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.resize(cv2.imread(str(aerial)), (W, H)))
    body = b"http://ns.adobe.com/xap/1.0/\x00" + packet
    seg = b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body
    data = buf.tobytes()
    path.write_bytes(data[:2] + seg + data[2:])
    return path


def _skysift(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "-c", str(cfg), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def _cfg(tmp_path: Path, inbox: Path) -> Path:
    cfg = tmp_path / "skysift.yaml"
    cfg.write_text(yaml.safe_dump({
        "source": {"folder": str(inbox), "settle_seconds": 0.2, "rescan_seconds": 0.5},
        "storage": {"dir": str(tmp_path / "data"), "min_free_mb": 0},
        "model": {"devices": ["CPU"], "tile_px": TILE},
        "log_level": "warning",
    }))
    return cfg


def _enu(lonlat) -> np.ndarray:
    lon, lat = np.asarray(lonlat, dtype=float).reshape(-1, 2).T
    return geodetic_to_enu(lat, lon, MSL0 - AGL, LAT0, LON0, MSL0 - AGL)[:, :2]


def _expected_centres() -> np.ndarray:
    """Closed form, nadir, top of the image to the north: east = dx / f * h, north = -dy / f * h."""
    xs = np.arange(TILE / 2, W, TILE)
    ys = np.arange(TILE / 2, H, TILE)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([(gx - W / 2) / F_PX * AGL, -(gy - H / 2) / F_PX * AGL], axis=-1)


@needs_exiftool
def test_run_once_stores_pose_footprint_and_tile_centres(tmp_path, aerial_tiles):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    src = aerial_tiles["damaged"][0]
    _nadir(inbox / "nadir.jpg", src, "GimbalPitchDegree=-90")
    _nadir(inbox / "absurd.jpg", src, "GimbalPitchDegree=-200")
    _with_app1(inbox / "bomb.jpg", src, BOMB)
    res = _skysift(_cfg(tmp_path, inbox), "run", "--once")
    assert res.returncode == 0, res.stderr
    db = sqlite3.connect(tmp_path / "data" / "skysift.db")
    db.row_factory = sqlite3.Row
    rows = {Path(r["source"]).name: r for r in db.execute("SELECT * FROM frames")}
    assert {n: r["status"] for n, r in rows.items()} == dict.fromkeys(rows, "classified")
    assert len(rows) == 3

    nadir = rows["nadir.jpg"]
    assert (nadir["alt_agl"], nadir["agl_source"], nadir["alt_msl"]) == (AGL, "xmp_relative", MSL0)
    assert (nadir["yaw"], nadir["pitch"], nadir["roll"]) == (0.0, -90.0, 0.0)
    assert nadir["pose_source"] == "gimbal" and nadir["geo_source"] == "xmp"
    ring = json.loads(nadir["footprint"])["coordinates"][0]
    half_w, half_h = W / 2 / F_PX * AGL, H / 2 / F_PX * AGL  # 32 m x 24 m
    corners = [[-half_w, half_h], [half_w, half_h], [half_w, -half_h], [-half_w, -half_h]]
    np.testing.assert_allclose(_enu(ring[:4]), corners, atol=0.02)
    assert ring[0] == ring[-1]
    centres = json.loads(nadir["tile_centers"])
    assert np.shape(centres) == (3, 4, 2) and np.shape(json.loads(nadir["tile_grid"]))[:2] == (3, 4)
    np.testing.assert_allclose(_enu(centres).reshape(3, 4, 2), _expected_centres(), atol=0.02)
    assert np.shape(json.loads(nadir["tile_corners"])) == (4, 5, 2)
    tiles = db.execute("SELECT lon, lat FROM tiles WHERE frame_id = ? AND row = 0 AND col = 0",
                       (nadir["frame_id"],)).fetchone()
    assert list(tiles) == centres[0][0]

    # pitch -200 is refused: the camera is taken as nadir, the heading is unknown, nothing placed
    absurd = rows["absurd.jpg"]
    assert absurd["pose_source"] == "nadir_heading_unknown" and absurd["yaw"] is None
    assert absurd["alt_agl"] == AGL and absurd["footprint"] is None
    bomb = rows["bomb.jpg"]
    assert bomb["lat"] is None and bomb["footprint"] is None and bomb["alt_agl"] is None


@needs_exiftool
def test_classify_json_shows_the_ground_fields_and_the_warnings(tmp_path, aerial_tiles):
    src = aerial_tiles["undamaged"][0]
    nadir = _nadir(tmp_path / "nadir.jpg", src, "GimbalPitchDegree=-90")
    absurd = _nadir(tmp_path / "absurd.jpg", src, "GimbalPitchDegree=-200")
    bomb = _with_app1(tmp_path / "bomb.jpg", src, BOMB)
    res = _skysift(_cfg(tmp_path, tmp_path), "classify", "--json", "--grid",
                   str(nadir), str(absurd), str(bomb))
    assert res.returncode == 0, res.stderr
    out = {Path(r["path"]).name: r for r in map(json.loads, res.stdout.splitlines())}
    n = out["nadir.jpg"]
    assert (n["alt_agl"], n["agl_source"], n["pose_source"]) == (AGL, "xmp_relative", "gimbal")
    assert n["pose"] == {"yaw": 0.0, "pitch": -90.0, "roll": 0.0}
    assert n["footprint"]["type"] == "Polygon" and n["warnings"] == []
    assert np.shape(n["tile_centers"]) == (3, 4, 2) == np.shape(n["grid"]) + (2,)
    a, b = out["absurd.jpg"], out["bomb.jpg"]
    assert a["label"] and a["error"] is None and a["footprint"] is None
    assert "absurd_pitch" in [w["reason"] for w in a["warnings"]]
    assert b["label"] and b["error"] is None and b["alt_agl"] is None
    assert [w["reason"] for w in b["warnings"]][0] == "xmp_unreadable"
    plain = _skysift(_cfg(tmp_path, tmp_path), "classify", "--json", str(nadir))
    assert "tile_centers" not in json.loads(plain.stdout) and "footprint" in plain.stdout
