"""The locator stage (agent.ingest.locate) on real files tagged by ExifTool: which source gives
each value, and bad inputs that cost a field with a warning, never the frame."""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from agent.core.config import check_paths, parse_config
from agent.core.errors import ConfigError
from agent.imaging import Position, decode_image
from agent.imaging.ground import geodetic_to_enu
from agent.ingest import Job, Locator, build_row
from drivers.base import Frame

needs_exiftool = pytest.mark.skipif(
    shutil.which("exiftool") is None, reason="exiftool not installed (apt libimage-exiftool-perl)"
)
W, H = 400, 300


def _job(tmp_path: Path, *tags: str, name: str = "f.jpg") -> tuple[Job, bytes]:
    import cv2

    path = tmp_path / name
    cv2.imwrite(str(path), np.full((H, W, 3), 120, np.uint8))
    if tags:
        subprocess.run(["exiftool", "-q", "-overwrite_original", *tags, str(path)],
                       check=True, capture_output=True)
    data = path.read_bytes()
    img = decode_image(data, tile_px=100, input_px=32, max_pixels=10**8)
    return Job(frame=Frame(flight_id="f", source=str(path), path=path), started=0.0, image=img), data


def _cfg(**over):
    return parse_config({"model": {"tile_px": 100}, **over})


class FlightLog:
    """A position source that also knows the height above ground and the heading."""

    geo_source = "track"

    def position_at(self, when: datetime) -> Position:
        return Position(10.0, 20.0, 300.0, when, agl=60.0, heading=45.0)


@needs_exiftool
def test_camera_model_override_and_telemetry_agl_and_heading(tmp_path):
    job, data = _job(tmp_path, "-Model=FC6310", "-DateTimeOriginal=2026:02:06 10:00:00")
    cfg = _cfg(camera={"hfov_deg": 30, "models": {"FC6310": {"hfov_deg": 90}}})
    Locator(cfg, lambda: [FlightLog()]).locate(job, data)
    loc, pose = job.location, job.location.pose
    assert (loc.lat, loc.lon, loc.geo_source) == (10.0, 20.0, "track")
    assert (pose.alt_agl, pose.agl_source) == (60.0, "telemetry")
    assert (pose.yaw, pose.pitch, pose.pose_source) == (45.0, -90.0, "telemetry")
    # hfov 90 (the model's own, over the default 30): the frame is 2 x 60 m wide on the ground
    ring = np.array(loc.footprint["coordinates"][0][:4])
    enu = geodetic_to_enu(ring[:, 1], ring[:, 0], 240.0, 10.0, 20.0, 240.0)
    width = np.linalg.norm(enu[1, :2] - enu[0, :2])
    assert width == pytest.approx(120.0, abs=0.05)
    assert np.shape(loc.tile_centers) == (3, 4, 2) and np.shape(loc.tile_corners) == (4, 5, 2)
    row = build_row(job, "f", "2026-02-06T10:00:01Z", positions=[], run_id=None)
    assert (row["alt_agl"], row["yaw"], row["geo_source"]) == (60.0, 45.0, "track")
    assert row["alt"] == 300.0  # as the source gave it; alt_agl is apart


@needs_exiftool
def test_unusable_dem_warns_once_at_start_and_per_frame(tmp_path, caplog):
    dem = tmp_path / "dem.tif"
    dem.write_bytes(b"not a GeoTIFF")
    cfg = _cfg(geotag={"dem": str(dem), "ground_elevation_m": 100.0}, camera={"hfov_deg": 60})
    with caplog.at_level(logging.WARNING):
        locator = Locator(cfg)
    assert sum("geotag.dem unusable" in r.message for r in caplog.records) == 1
    for i in range(2):
        job, data = _job(tmp_path, "-GPSLatitude=47", "-GPSLatitudeRef=N", "-GPSLongitude=8",
                         "-GPSLongitudeRef=E", "-GPSAltitude=180", "-XMP-drone-dji:GimbalPitchDegree=-90",
                         "-XMP-drone-dji:GimbalYawDegree=10",
                         name=f"f{i}.jpg")
        locator.locate(job, data)
        assert "dem_unavailable" in [w["reason"] for w in job.warnings]
        # the next rule applies: the configured ground height
        assert (job.location.pose.alt_agl, job.location.pose.agl_source) == (80.0, "config_ground")
        assert job.location.footprint is not None
    assert sum("geotag.dem unusable" in r.message for r in caplog.records) == 1


@needs_exiftool
def test_negative_agl_and_no_lens_cost_their_fields_only(tmp_path):
    job, data = _job(tmp_path, "-XMP-drone-dji:RelativeAltitude=-5", "-XMP-drone-dji:GpsLatitude=1",
                     "-XMP-drone-dji:GpsLongitude=2", "-XMP-drone-dji:GimbalPitchDegree=-90",
                     "-XMP-drone-dji:GimbalYawDegree=0")
    Locator(_cfg()).locate(job, data)
    reasons = [w["reason"] for w in job.warnings]
    assert "negative_agl" in reasons and "no_intrinsics" in reasons
    assert job.location.pose.alt_agl is None and job.location.footprint is None
    assert (job.location.lat, job.location.geo_source) == (1.0, "xmp")
    assert all(set(w) == {"reason", "message"} for w in job.warnings)


def test_config_geometry_keys_are_bounded_and_the_dem_must_exist(tmp_path):
    cfg = _cfg(geotag={"dem": str(tmp_path / "missing.tif")})
    with pytest.raises(ConfigError, match="geotag.dem"):
        check_paths(cfg, None)
    for bad in ({"geotag": {"ground_elevation_m": 1e6}},
                {"geotag": {"ground_elevation_m": math.inf}},
                {"camera": {"models": {"FC6310": {"hfov_deg": 190}}}},
                {"camera": {"models": {"FC6310": {"fov": 80}}}},
                {"camera": {"models": {f"m{i}": {} for i in range(65)}}}):
        with pytest.raises(ConfigError):
            parse_config(bad)
    assert Locator(_cfg(camera={"focal_mm": 8.8, "models": {"X": {"sensor_width_mm": 13.2}}})
                   ).overrides("X").sensor_width_mm == 13.2


def test_a_position_source_without_agl_is_no_telemetry(tmp_path):
    from agent.imaging import telemetry_at

    class Track:
        def position_at(self, when):
            return Position(1.0, 2.0, None, when)

    when = datetime(2026, 1, 1, tzinfo=timezone.utc).isoformat()
    assert telemetry_at(when, [Track()]) is None
    assert telemetry_at(when, [Track(), FlightLog()]).heading == 45.0
