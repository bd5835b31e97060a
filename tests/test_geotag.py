"""Geotagging: EXIF GPS first, then a GPX/CSV track at the capture time, then telemetry."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.core.config import parse_config
from agent.core.errors import ConfigError
from agent.imaging.decode import ExifInfo
from agent.imaging.geotag import Position, TrackFile, geotag, parse_time, shift

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)

GPX = """<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
  <trk><name>t</name><trkseg>
    <trkpt lat="40.0" lon="-3.0"><ele>100</ele><time>2026-03-01T12:00:00Z</time></trkpt>
    <trkpt lat="40.001" lon="-3.002"><ele>110</ele><time>2026-03-01T12:00:10Z</time></trkpt>
    <trkpt lat="40.002" lon="-3.004"><ele>120</ele><time>2026-03-01T12:00:20Z</time></trkpt>
    <trkpt lat="40.010" lon="-3.010"><ele>130</ele><time>2026-03-01T12:05:00Z</time></trkpt>
  </trkseg></trk>
</gpx>
"""


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_gpx_interpolates_by_time(tmp_path: Path) -> None:
    p = tmp_path / "track.gpx"
    p.write_text(GPX)
    track = TrackFile(p, max_gap_s=30)
    assert len(track.points) == 4
    pos = track.position_at(_at(5))
    assert pos is not None
    assert pos.lat == pytest.approx(40.0005)
    assert pos.lon == pytest.approx(-3.001)
    assert pos.alt == pytest.approx(105)
    exact = track.position_at(_at(10))
    assert exact is not None and exact.lat == pytest.approx(40.001)


def test_track_gives_nothing_outside_or_across_gaps(tmp_path: Path) -> None:
    p = tmp_path / "track.gpx"
    p.write_text(GPX)
    track = TrackFile(p, max_gap_s=30)
    assert track.position_at(_at(-1)) is None  # before the first point
    assert track.position_at(_at(301)) is None  # after the last
    assert track.position_at(_at(100)) is None  # inside the 280 s gap
    wide = TrackFile(p, max_gap_s=600)
    assert wide.position_at(_at(100)) is not None


def test_csv_track_with_header_offsets_and_no_alt(tmp_path: Path) -> None:
    p = tmp_path / "track.csv"
    p.write_text(
        "time,lat,lon\n"
        "2026-03-01T13:00:00+01:00,10.0,20.0\n"  # = 12:00:00Z
        "2026-03-01T12:00:20Z,10.2,20.4\n"
    )
    track = TrackFile(p, max_gap_s=60)
    pos = track.position_at(_at(10))
    assert pos is not None
    assert (pos.lat, pos.lon, pos.alt) == (pytest.approx(10.1), pytest.approx(20.2), None)


def test_csv_track_across_the_antimeridian(tmp_path: Path) -> None:
    p = tmp_path / "track.csv"
    p.write_text("time,lat,lon,alt\n2026-03-01T12:00:00Z,0,179.9,5\n2026-03-01T12:00:10Z,0,-179.9,15\n")
    pos = TrackFile(p).position_at(_at(5))
    assert pos is not None
    assert abs(pos.lon) == pytest.approx(180.0)
    assert pos.alt == pytest.approx(10)


def test_bad_track_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "track.csv"
    p.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ConfigError, match="time,lat,lon"):
        TrackFile(p)
    with pytest.raises(ConfigError, match="cannot read"):
        TrackFile(tmp_path / "missing.gpx")


class _Telemetry:
    def __init__(self, pos: Position | None):
        self.pos = pos
        self.asked: list[datetime] = []

    def position_at(self, when: datetime) -> Position | None:
        self.asked.append(when)
        return self.pos


def test_geotag_order_exif_track_telemetry_none(tmp_path: Path) -> None:
    p = tmp_path / "track.gpx"
    p.write_text(GPX)
    track = TrackFile(p)
    tele = _Telemetry(Position(1.0, 2.0, 3.0, T0))
    exif_gps = ExifInfo(lat=43.5, lon=11.9, alt=None)
    assert geotag(exif_gps, "2026-03-01T12:00:05Z", [track, tele]) == (43.5, 11.9, None, "exif")
    lat, lon, alt, src = geotag(ExifInfo(), "2026-03-01T12:00:05Z", [track, tele])
    assert src == "track" and lat == pytest.approx(40.0005)
    assert geotag(ExifInfo(), "2026-03-01T13:00:00Z", [track, tele]) == (1.0, 2.0, 3.0, "telemetry")
    assert geotag(ExifInfo(), "2026-03-01T13:00:00Z", [track]) == (None, None, None, "none")
    assert geotag(None, None, [track, tele]) == (None, None, None, "none")


def test_time_helpers() -> None:
    assert parse_time("2026-03-01T12:00:00") == T0  # naive means UTC
    assert parse_time(T0.timestamp()) == T0
    assert parse_time("garbage") is None
    assert shift("2026-03-01T12:00:00Z", -2.5) == "2026-03-01T11:59:57.500Z"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from agent.core.config import ModelConfig
    from models.factory import create_frame_classifier

    clf = create_frame_classifier(ModelConfig(devices=["CPU"]), tmp_path_factory.mktemp("ov-cache"))
    yield clf
    clf.close()


def test_pipeline_geotags_from_exif_track_and_mtime(tmp_path: Path, exif_samples: Path, aerial_tiles, classifier) -> None:
    """End to end: EXIF GPS wins; a camera file without GPS is placed by the track at its EXIF
    time (camera clock + clock_offset_s); a PNG tile without EXIF by its mtime."""
    from agent.service.agent import Agent
    from agent.store.db import Store

    inbox = tmp_path / "inbox" / "f1"
    inbox.mkdir(parents=True)
    shutil.copy(exif_samples / "gps" / "DSCN0010.jpg", inbox)
    shutil.copy(exif_samples / "Canon_40D.jpg", inbox)  # DateTimeOriginal 2008-05-30 15:56:01, no GPS
    tile = inbox / "tile.png"
    shutil.copy(aerial_tiles["damaged"][0], tile)
    mtime = datetime(2026, 3, 1, 12, 0, 5, tzinfo=timezone.utc).timestamp()
    os.utime(tile, (mtime, mtime))
    late = inbox / "late.png"  # mtime outside the track: no position
    shutil.copy(aerial_tiles["undamaged"][0], late)
    os.utime(late, (mtime + 3600, mtime + 3600))
    track = tmp_path / "track.csv"
    track.write_text(
        "time,lat,lon,alt\n"
        "2008-05-30T15:55:50Z,50.0,8.0,300\n"
        "2008-05-30T15:56:10Z,50.2,8.2,320\n"
        "2026-03-01T12:00:00Z,40.0,-3.0,100\n"
        "2026-03-01T12:00:10Z,40.001,-3.002,110\n"
    )
    cfg = parse_config(
        {
            "source": {"folder": str(tmp_path / "inbox"), "settle_seconds": 0},
            "storage": {"dir": str(tmp_path / "data"), "min_free_mb": 0},
            "geotag": {"track": str(track), "max_gap_s": 60, "clock_offset_s": 1.0},
        }
    )
    assert Agent(cfg, classifier=classifier).run(once=True) == 0
    store = Store(cfg.db_path)
    rows = {Path(r["source"]).name: r for r in store.frames()}
    store.close()
    gps = rows["DSCN0010.jpg"]
    assert gps["geo_source"] == "exif"
    assert gps["lat"] == pytest.approx(43.4674, abs=1e-3) and gps["lon"] == pytest.approx(11.8851, abs=1e-3)
    canon = rows["Canon_40D.jpg"]
    assert canon["captured_at"] == "2008-05-30T15:56:02.000Z"  # +1 s clock offset
    assert canon["geo_source"] == "track"
    assert canon["lat"] == pytest.approx(50.12) and canon["alt"] == pytest.approx(312)
    t = rows["tile.png"]
    assert t["geo_source"] == "track"
    assert t["lat"] == pytest.approx(40.0006) and t["lon"] == pytest.approx(-3.0012)
    assert rows["late.png"]["geo_source"] == "none" and rows["late.png"]["lat"] is None


def test_pipeline_uses_ctx_telemetry_after_the_track(tmp_path: Path, aerial_tiles, classifier) -> None:
    """A live position source registered as ctx.telemetry (the MQTT subscriber's role) places
    frames the track cannot; the telemetry source itself is another component's."""
    from agent.service.agent import Agent
    from agent.store.db import Store

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(aerial_tiles["damaged"][0], inbox / "a.png")
    cfg = parse_config(
        {
            "source": {"folder": str(inbox), "settle_seconds": 0},
            "storage": {"dir": str(tmp_path / "data"), "min_free_mb": 0},
        }
    )
    agent = Agent(cfg, classifier=classifier)
    tele = _Telemetry(Position(35.0, 139.0, 50.0, T0))
    agent.ctx.telemetry = tele
    assert agent.run(once=True) == 0
    store = Store(cfg.db_path)
    (row,) = store.frames()
    store.close()
    assert (row["lat"], row["lon"], row["alt"], row["geo_source"]) == (35.0, 139.0, 50.0, "telemetry")
    mtime = datetime.fromtimestamp((inbox / "a.png").stat().st_mtime, tz=timezone.utc)
    assert abs((tele.asked[0] - mtime).total_seconds()) < 0.01  # asked at the capture time


def test_srt_logs_are_a_track_after_exif_and_before_telemetry(tmp_path: Path) -> None:
    from agent.imaging.srt import SrtTracks

    log = tmp_path / "DJI_0001.SRT"
    log.write_text(
        "1\n00:00:00,000 --> 00:00:00,033\n<font size=\"28\">FrameCnt: 1, DiffTime: 33ms\n"
        "2026-03-01 13:00:00.000\n[latitude: 45.000000] [longitude: 9.000000] "
        "[rel_alt: 10.000 abs_alt: 110.000] </font>\n\n"
        "2\n00:00:10,000 --> 00:00:10,033\n<font size=\"28\">FrameCnt: 301, DiffTime: 33ms\n"
        "2026-03-01 13:00:10.000\n[latitude: 45.001000] [longitude: 9.002000] "
        "[rel_alt: 30.000 abs_alt: 130.000] </font>\n"
    )
    # The log's times are the camera's clock, as EXIF's are: in camera_timezone (Rome, UTC+1
    # in March), shifted by clock_offset_s.
    logs = SrtTracks(camera_timezone="Europe/Rome", clock_offset_s=2.0)
    assert logs.add(str(log), "f1")
    tele = _Telemetry(Position(1.0, 2.0, 3.0, T0))
    lat, lon, alt, src = geotag(ExifInfo(), "2026-03-01T12:00:07Z", [logs, tele])
    assert src == "track" and (lat, lon, alt) == (pytest.approx(45.0005), pytest.approx(9.001), pytest.approx(120))
    assert logs.position_at(parse_time("2026-03-01T12:00:07Z")).rel_alt == pytest.approx(20)
    assert geotag(ExifInfo(lat=1.5, lon=2.5), "2026-03-01T12:00:07Z", [logs, tele])[3] == "exif"
    assert geotag(ExifInfo(), "2026-03-01T12:00:30Z", [logs, tele])[3] == "telemetry"
