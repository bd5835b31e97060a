"""`skysift classify` end to end with the shipped model on the real shared files."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from agent.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
KEYS = {
    "path", "label", "p_damaged", "engine", "device", "precision", "tiles", "damaged_tiles",
    "width", "height", "lat", "lon", "alt", "captured_at", "inference_ms", "error",
}


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    c = tmp_path / "skysift.yaml"
    c.write_text(f"storage:\n  dir: {tmp_path / 'data'}\nmodel:\n  devices: [CPU]\n")
    return c


def _rows(out: str) -> list[dict]:
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    for r in rows:
        assert set(r) >= KEYS, r
    return rows


def _bad_files(tmp_path: Path, exif_samples: Path) -> Path:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.jpg").write_text("not a picture\n")
    jpeg = (exif_samples / "gps" / "DSCN0010.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    # a PNG header claiming 100000x100000 pixels (10 GP) in ~60 bytes
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    body = b"IHDR" + ihdr
    (bad / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body))
    )
    return bad


def test_every_shared_sample_and_broken_file_gets_a_line(tmp_path, conf, exif_samples):
    bad = _bad_files(tmp_path, exif_samples)
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "-c", str(conf), "classify", "--json", str(exif_samples), str(bad)],
        capture_output=True, text=True, cwd=ROOT, timeout=180,
    )
    assert proc.returncode == 1, proc.stderr  # some files failed
    rows = _rows(proc.stdout)
    samples = sorted(p for p in exif_samples.rglob("*.jpg"))
    assert len(rows) == len(samples) + 4
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["corrupted.jpg"]["error"]["reason"] == "corrupt"
    assert by_name["empty.jpg"]["error"]["reason"] == "empty"
    assert by_name["notes.jpg"]["error"]["reason"] == "not_image"
    assert by_name["truncated.jpg"]["error"]["reason"] == "truncated"
    assert by_name["bomb.png"]["error"]["reason"] == "too_large"
    ok = [r for r in rows if r["error"] is None]
    assert len(ok) == len(samples) - 1  # every sample but corrupted.jpg is classified
    for r in ok:
        assert r["label"] in ("damaged", "undamaged") and 0 <= r["p_damaged"] <= 1
        assert r["engine"] == "openvino" and r["device"] == "CPU" and r["tiles"] >= 1
        assert 0 <= r["damaged_tiles"] <= r["tiles"]
    gps = [r for r in ok if "/gps/" in r["path"]]
    assert len(gps) == 9 and all(43 < r["lat"] < 44 and 11 < r["lon"] < 12 for r in gps)
    assert all(r["captured_at"].startswith("2008-10-22T") and r["alt"] is None for r in gps)
    assert by_name["DSCN0010.jpg"]["tiles"] == 20  # 640x480: 5 x 4 tiles of 128 px
    assert by_name["Canon_40D.jpg"]["lat"] is None
    assert "failed" in proc.stderr


def test_aerial_tiles_json(conf, aerial_tiles, capsys):
    folder = aerial_tiles["damaged"][0].parent
    assert main(["-c", str(conf), "classify", "--json", "--grid", str(folder)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == len(aerial_tiles["damaged"])
    for r in rows:
        assert (r["tiles"], r["width"], r["height"], r["error"]) == (1, 128, 128, None)
        assert r["grid"] == [[pytest.approx(r["p_damaged"], abs=1e-4)]]
        assert (r["label"] == "damaged") == (r["damaged_tiles"] == 1)
    # the shipped model finds most of the labelled damaged tiles
    assert sum(r["label"] == "damaged" for r in rows) > len(rows) / 2


def test_human_output_and_exit_status(conf, exif_samples, tmp_path, capsys):
    gps = exif_samples / "gps" / "DSCN0010.jpg"
    assert main(["-c", str(conf), "classify", str(gps)]) == 0
    out = capsys.readouterr().out
    assert "DSCN0010.jpg:" in out and "DAMAGED" in out and "43.467448,11.885127" in out
    assert main(["-c", str(conf), "classify", str(gps), str(tmp_path / "missing.jpg")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "ERROR unreadable" in out[1]


def test_overrides(conf, exif_samples, capsys):
    gps = str(exif_samples / "gps" / "DSCN0012.jpg")
    argv = ["-c", str(conf), "classify", "--json", "--device", "MYRIAD,GPU,CPU", "--precision", "f32", "--tile-px", "256", gps]
    assert main(argv) == 0
    r = _rows(capsys.readouterr().out)[0]
    # 640x480 with 256 px tiles: 3 columns (last shifted inward) x 2 rows
    assert (r["engine"], r["device"], r["precision"], r["tiles"]) == ("openvino", "CPU", "f32", 6)
    assert main(["-c", str(conf), "classify", "--json", "--engine", "tensorflow", gps]) == 0
    t = _rows(capsys.readouterr().out)[0]
    assert (t["engine"], t["tiles"]) == ("tensorflow", 20)


def test_json_has_the_ground_fields_and_a_warnings_list(conf, exif_samples, tmp_path, capsys):
    """A camera photo with GPS but no pose: placed, not located on the ground, and told why."""
    gps = exif_samples / "gps" / "DSCN0010.jpg"
    missing = tmp_path / "missing.jpg"
    assert main(["-c", str(conf), "classify", "--json", str(gps), str(missing)]) == 1
    ok, failed = _rows(capsys.readouterr().out)
    assert ok["lat"] is not None and ok["alt_agl"] is None and ok["agl_source"] == "none"
    assert ok["pose"] == {"yaw": None, "pitch": -90.0, "roll": 0.0}
    assert ok["pose_source"] == "nadir_heading_unknown" and ok["footprint"] is None
    reasons = [w["reason"] for w in ok["warnings"]]
    assert reasons == ["no_agl", "heading_unknown"]  # one per reason
    assert failed["error"]["reason"] == "unreadable" and failed["warnings"] == []
    assert "tile_centers" not in ok  # only with --grid
