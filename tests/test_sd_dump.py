"""A drone's SD-card dump: only the pictures are frames, and DJI .SRT flight logs place them."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from PIL import Image

from agent.imaging.srt import MAX_BLOCK_CHARS, SrtError, SrtTracks, parse_srt, read_srt

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc


def new_srt(start: datetime, seconds: int, lat0: float, lon0: float, fps: int = 30) -> str:
    """A Mini 3 / Air 3 / Mavic 3 log: one block per video frame, flying north-east at
    1e-5 degrees a second, climbing 1 m a second from 50 m above take-off (120 m MSL)."""
    blocks = []
    for n in range(seconds * fps + 1):
        t = n / fps
        ms = round(t * 1000)
        tc = f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"
        ms2 = round((n + 1) / fps * 1000)
        tc2 = f"{ms2 // 3_600_000:02d}:{ms2 // 60_000 % 60:02d}:{ms2 // 1000 % 60:02d},{ms2 % 1000:03d}"
        when = (start + timedelta(seconds=t)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        blocks.append(
            f"{n + 1}\n{tc} --> {tc2}\n"
            f'<font size="28">FrameCnt: {n + 1}, DiffTime: 33ms\n{when}\n'
            f"[iso : 100] [shutter : 1/1000.0] [fnum : 1.7] [ev : 0] [color_md : default] "
            f"[focal_len : 24.00] [latitude: {lat0 + 1e-5 * t:.6f}] [longitude: {lon0 + 1e-5 * t:.6f}] "
            f"[rel_alt: {50 + t:.3f} abs_alt: {120.5 + t:.3f}] [ct : 5500] </font>\n"
        )
    return "\n".join(blocks)


def old_srt(start: datetime, seconds: int, lat0: float, lon0: float) -> str:
    """A Phantom 4 log: one block a second, longitude first, a satellite count third."""
    blocks = []
    for n in range(seconds + 1):
        when = (start + timedelta(seconds=n)).strftime("%Y.%m.%d %H:%M:%S")
        blocks.append(
            f"{n + 1}\n00:00:{n:02d},000 --> 00:00:{n + 1:02d},000\n"
            f"HOME({lon0:.4f},{lat0:.4f}) {when}\n"
            f"GPS({lon0 + 1e-4 * n:.4f},{lat0 + 1e-4 * n:.4f},15) BAROMETER:{2.0 * n:.1f}\n"
            "ISO:100 Shutter:60 EV: Fnum:2.2 \n"
        )
    return "\n".join(blocks)


def jpeg(path: Path, tile: Path, taken: datetime, gps: tuple[float, float] | None = None) -> None:
    """A camera JPEG of ``tile`` with DateTimeOriginal ``taken`` (camera clock, no zone)."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = taken.strftime("%Y:%m:%d %H:%M:%S")
    if gps is not None:
        def dms(v: float) -> tuple[float, float, float]:
            v = abs(v)
            return (float(int(v)), float(int(v * 60 % 60)), round(v * 3600 % 60, 4))

        exif.get_ifd(0x8825).update(
            {1: "N" if gps[0] >= 0 else "S", 2: dms(gps[0]), 3: "E" if gps[1] >= 0 else "W", 4: dms(gps[1])}
        )
    buf = io.BytesIO()
    Image.open(tile).convert("RGB").save(buf, "JPEG", exif=exif, quality=90)
    path.write_bytes(buf.getvalue())


def test_parse_both_formats() -> None:
    t0 = datetime(2023, 5, 1, 10, 12, 13)
    pts, skipped = parse_srt(new_srt(t0, 10, 37.7749, -122.4194))
    assert skipped == 0
    # 30 blocks a second, thinned to about one per 0.2 s, the last one kept
    assert 40 <= len(pts) <= 52
    first, last = pts[0], pts[-1]
    assert (first.lat, first.lon, first.alt, first.rel_alt) == (37.7749, -122.4194, 120.5, 50.0)
    assert first.time == t0.replace(tzinfo=UTC)
    assert last.time == (t0 + timedelta(seconds=10)).replace(tzinfo=UTC)
    assert last.lat == pytest.approx(37.7750) and last.rel_alt == pytest.approx(60.0)

    old, skipped = parse_srt(old_srt(datetime(2017, 7, 29, 15, 18, 50), 5, -25.2088, 131.1660))
    assert skipped == 0 and len(old) == 6
    assert (old[0].lat, old[0].lon, old[0].alt) == (-25.2088, 131.166, None)  # 15 satellites: no altitude
    assert old[5].lat == pytest.approx(-25.2083) and old[5].rel_alt == 10.0
    assert old[5].time == datetime(2017, 7, 29, 15, 18, 55, tzinfo=UTC)


def test_parse_variants_and_camera_clock() -> None:
    text = (
        "1\n00:00:00,000 --> 00:00:00,033\n"
        '<font size="36">SrtCnt : 1, DiffTime : 33ms\n2022-08-07 13:40:40,774,808\n'
        "[iso : 100] [latitude : 46.087700] [longtitude : 7.079700] [altitude: 1592.383000] </font>\n\n"
        # Matrice 300: latitude first, an altitude in metres third (0.0M: none)
        "2\n00:00:01,000 --> 00:00:02,000\n2022.08.07 13:40:42\nGPS(36.6146,-6.1120,0.0M) BAROMETER:0.3M\n\n"
        # Mavic Pro
        "3\n00:00:02,000 --> 00:00:03,000\n2022-08-07 13:40:43\n"
        "F/2.2, SS 1000, ISO 100, EV 0, GPS (8.5456, 47.3982, 19), D 12.34m, H 45.60m, H.S 0.00m/s\n\n"
        # no fix yet: zeros, dropped silently
        "4\n00:00:03,000 --> 00:00:04,000\n2022-08-07 13:40:44.000\n[latitude: 0.000000] [longitude: 0.000000]\n\n"
        # a position without a time: counted as skipped
        "5\n00:00:04,000 --> 00:00:05,000\n[latitude: 46.1] [longitude: 7.1]\n"
    )
    rome = ZoneInfo("Europe/Rome")  # UTC+2 in August
    pts, skipped = parse_srt(text, rome, clock_offset_s=1.5)
    assert skipped == 1
    a, b, c = pts
    assert (a.lat, a.lon, a.alt) == (46.0877, 7.0797, 1592.383)
    assert a.time == datetime(2022, 8, 7, 11, 40, 42, 274808, tzinfo=UTC)
    assert (b.lat, b.lon, b.alt, b.rel_alt) == (36.6146, -6.112, None, 0.3)
    assert (c.lat, c.lon, c.rel_alt) == (47.3982, 8.5456, 45.6)


def test_parser_is_bounded(tmp_path: Path, monkeypatch) -> None:
    # Adversarial blocks just under the block cap, 3 MB in all: long runs that a pattern with
    # nested repetition would backtrack on.
    nasty = ["[latitude: " + "1" * 4000, "GPS(" + "1," * 1990, "2023-" * 790 + "[latitude: 1" * 10]
    t0 = time.monotonic()
    assert parse_srt("\n\n".join(nasty * 250)) == ([], 0)
    assert parse_srt(("x" * (MAX_BLOCK_CHARS + 1)) + " [latitude: 1] [longitude: 1] 2023-01-01 00:00:00")[1] == 1
    assert time.monotonic() - t0 < 2.0
    big = tmp_path / "big.SRT"
    big.write_text(new_srt(datetime(2023, 5, 1, 10, 0, 0), 2, 1.0, 1.0))
    monkeypatch.setattr("agent.imaging.srt.MAX_SRT_BYTES", 1000)
    with pytest.raises(SrtError, match="larger than"):
        read_srt(big)


def test_malformed_logs_warn_and_keep_what_is_readable(tmp_path: Path, caplog) -> None:
    junk = tmp_path / "junk.SRT"
    junk.write_bytes(b"\x00\xff garbage \x89PNG\r\n" * 100)
    part = tmp_path / "part.SRT"
    good = new_srt(datetime(2023, 5, 1, 10, 0, 0), 3, 10.0, 20.0, fps=1)
    part.write_text(good + "\n\n99\n00:00:09,000 --> 00:00:10,000\n20x3-05-01 [latitude: 10.1] [longitude: 20.1]\n")
    logs = SrtTracks()
    with caplog.at_level("WARNING", logger="agent.imaging.srt"):
        assert logs.add(str(junk), "f1") is False
        assert logs.add(str(part), "f1") is True
    assert "junk.SRT holds no timed positions" in caplog.text
    assert "part.SRT: 1 unreadable blocks skipped" in caplog.text
    pos = logs.position_at(datetime(2023, 5, 1, 10, 0, 1, 500000, tzinfo=UTC))
    assert pos is not None and pos.lat == pytest.approx(10.000015)


def test_tracks_of_two_flights_at_once_place_nothing(tmp_path: Path) -> None:
    t0 = datetime(2023, 5, 1, 10, 0, 0)
    for name, lat, start in (("a.SRT", 10.0, t0), ("b.SRT", 50.0, t0 + timedelta(seconds=5)), ("c.SRT", 10.0, t0)):
        (tmp_path / name).write_text(new_srt(start, 10, lat, 20.0, fps=2))
    logs = SrtTracks(max_gap_s=5)
    logs.add(str(tmp_path / "a.SRT"), "north")
    logs.add(str(tmp_path / "c.SRT"), "north")  # a second camera's log of the same flight
    assert logs.position_at(datetime(2023, 5, 1, 10, 0, 7, tzinfo=UTC)).lat == pytest.approx(10.00007)
    logs.add(str(tmp_path / "b.SRT"), "south")
    assert logs.position_at(datetime(2023, 5, 1, 10, 0, 7, tzinfo=UTC)) is None  # which drone?
    assert logs.position_at(datetime(2023, 5, 1, 10, 0, 2, tzinfo=UTC)).lat == pytest.approx(10.00002)
    assert logs.position_at(datetime(2023, 5, 1, 10, 0, 14, tzinfo=UTC)).lat == pytest.approx(50.00009)
    assert logs.position_at(datetime(2023, 5, 1, 11, 0, 0, tzinfo=UTC)) is None


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ov-cache")


def test_sd_dump_run_once(tmp_path: Path, aerial_tiles, cache: Path) -> None:
    """`skysift run --once` over a DJI dump: the JPEGs are the only frames (no rejected rows
    for logs, sidecars, previews, videos), placed by their folder's SRT log at their EXIF time;
    a malformed log is one warning and its folder's frame is still classified."""
    tiles = aerial_tiles["damaged"][:3] + aerial_tiles["undamaged"][:3]
    inbox = tmp_path / "sdcard"
    m1 = inbox / "mission-1" / "DCIM" / "100MEDIA"
    m2, m3 = inbox / "mission-2", inbox / "mission-3"
    for d in (m1, m2, m3):
        d.mkdir(parents=True)
    t1 = datetime(2023, 5, 1, 10, 12, 13)
    (m1 / "DJI_0001.SRT").write_text(new_srt(t1, 20, 37.7749, -122.4194))
    (m1 / "DJI_0001.MP4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(4000))
    (m1 / "DJI_0001.LRF").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(1000))
    jpeg(m1 / "DJI_0002.JPG", tiles[0], t1 + timedelta(seconds=5))
    (m1 / "DJI_0002.xmp").write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"></x:xmpmeta>\n')
    jpeg(m1 / "DJI_0003.jpg", tiles[1], t1 + timedelta(seconds=12))
    t2 = datetime(2017, 7, 29, 15, 18, 50)
    (m2 / "DJI_0010.srt").write_text(old_srt(t2, 30, -25.2088, 131.1660))
    (m2 / "DJI_0010.MOV").write_bytes(bytes(2000))
    jpeg(m2 / "DJI_0011.JPG", tiles[2], t2 + timedelta(seconds=10))
    jpeg(m2 / "DJI_0012.JPG", tiles[3], t2 + timedelta(seconds=20), gps=(43.5, 11.25))  # EXIF wins
    (m2 / "DJI_0012.DNG").write_bytes(b"II*\x00" + bytes(3000))
    (m3 / "DJI_0020.SRT").write_bytes(b"1\n00:00:00,000 --> garbage \xff\xfe\n[latitude: x]\n")
    jpeg(m3 / "DJI_0021.JPG", tiles[4], t1 + timedelta(hours=1))  # no other log covers it
    (inbox / "MISC").mkdir()
    (inbox / "MISC" / "version.txt").write_text("FW 01.02.0300\n")
    old = time.time() - 60  # a backfill: every file is complete
    for p in inbox.rglob("*"):
        os.utime(p, (old, old))
    cfg = tmp_path / "skysift.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "source": {"folder": str(inbox), "settle_seconds": 0.2, "rescan_seconds": 0.5},
                "storage": {"dir": str(tmp_path / "data"), "min_free_mb": 0},
                "model": {"devices": ["CPU"], "cache_dir": str(cache)},
                "log_level": "info",
            }
        )
    )
    res = subprocess.run(
        [sys.executable, "-m", "agent", "-c", str(cfg), "run", "--once"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    con = sqlite3.connect(tmp_path / "data" / "skysift.db")
    con.row_factory = sqlite3.Row
    rows = {Path(r["source"]).name: dict(r) for r in con.execute("SELECT * FROM frames")}
    con.close()
    assert sorted(rows) == ["DJI_0002.JPG", "DJI_0003.jpg", "DJI_0011.JPG", "DJI_0012.JPG", "DJI_0021.JPG"]
    assert {r["status"] for r in rows.values()} == {"classified"}
    a, b = rows["DJI_0002.JPG"], rows["DJI_0003.jpg"]
    assert a["geo_source"] == b["geo_source"] == "track"
    assert a["lat"] == pytest.approx(37.77495, abs=1e-6) and a["lon"] == pytest.approx(-122.41935, abs=1e-6)
    assert a["alt"] == pytest.approx(125.5, abs=0.05)
    assert b["lat"] == pytest.approx(37.77502, abs=1e-6)
    p = rows["DJI_0011.JPG"]
    assert p["geo_source"] == "track"  # the Phantom's longitude-first GPS(...)
    assert p["lat"] == pytest.approx(-25.2078, abs=1e-6) and p["lon"] == pytest.approx(131.1670, abs=1e-6)
    assert rows["DJI_0012.JPG"]["geo_source"] == "exif"
    assert rows["DJI_0012.JPG"]["lat"] == pytest.approx(43.5, abs=1e-4)
    lost = rows["DJI_0021.JPG"]
    assert lost["geo_source"] == "none" and lost["label"] is not None
    warnings = [line for line in res.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "DJI_0020.SRT" in warnings[0], warnings
    assert "files that are not frames skipped (.dng 1, .lrf 1, .mov 1, .mp4 1, .txt 1, .xmp 1)" in res.stderr

