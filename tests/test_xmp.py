"""XMP pose converters and the frame pose rules, on metadata written by the real ExifTool."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from agent.imaging import read_exif
from agent.imaging.pose import PoseConfig, Telemetry, frame_pose
from agent.imaging.xmp import MAX_XMP_BYTES, XmpInfo, read_xmp

CONFIG = Path(__file__).parent / "exiftool" / "drones.config"
needs_exiftool = pytest.mark.skipif(
    shutil.which("exiftool") is None, reason="exiftool not installed (apt libimage-exiftool-perl)"
)


def _tagged(tmp_path: Path, *tags: str) -> bytes:
    """A small JPEG written by cv2, then tagged by ExifTool with our namespace config."""
    import cv2

    path = tmp_path / "frame.jpg"
    cv2.imwrite(str(path), np.full((30, 40, 3), 128, np.uint8))
    subprocess.run(["exiftool", "-config", str(CONFIG), "-q", "-overwrite_original", *tags,
                    str(path)], check=True, capture_output=True)
    return path.read_bytes()


@needs_exiftool
def test_dji_with_the_old_longitude_spelling(tmp_path):
    dji = "-XMP-drone-dji:"
    data = _tagged(tmp_path, dji + "GPSLatitude=47.5", dji + "GPSLongtitude=-8.25",
                   dji + "AbsoluteAltitude=+512.3", dji + "RelativeAltitude=+80.5",
                   dji + "GimbalPitchDegree=-45.2", dji + "GimbalYawDegree=-30",
                   dji + "GimbalRollDegree=1.5", dji + "FlightYawDegree=10")
    x = read_xmp(data)
    assert (x.lat, x.lon, x.alt_msl, x.rel_alt) == (47.5, -8.25, 512.3, 80.5)
    assert (x.yaw, x.pitch, x.roll, x.vendor) == (330.0, -45.2, 1.5, "dji")
    assert x.flight_yaw == 10.0 and x.warnings == []


@needs_exiftool
def test_skydio_struct(tmp_path):
    sky = "-XMP-drone-skydio:"
    data = _tagged(tmp_path, sky + "Latitude=1.5", sky + "Longitude=2.5",
                   sky + "AbsoluteAltitude=99", sky + "CameraOrientationNEDPitch=-30",
                   sky + "CameraOrientationNEDYaw=100", sky + "CameraOrientationNEDRoll=-2")
    x = read_xmp(data)
    assert (x.lat, x.lon, x.alt_msl) == (1.5, 2.5, 99.0)
    assert (x.yaw, x.pitch, x.roll, x.vendor) == (100.0, -30.0, -2.0, "skydio")


@needs_exiftool
def test_parrot_rational_agl_and_its_own_angles(tmp_path):
    data = _tagged(tmp_path, "-XMP-Camera:AboveGroundAltitude=1234/10",
                   "-XMP-drone-parrot:CameraPitchDegree=-12",
                   "-XMP-drone-parrot:CameraYawDegree=45",
                   "-XMP-Camera:Pitch=78")
    x = read_xmp(data)
    assert x.agl == pytest.approx(123.4)
    assert (x.yaw, x.pitch, x.vendor) == (45.0, -12.0, "parrot")
    pose = frame_pose(None, x)
    assert (pose.alt_agl, pose.agl_source) == (pytest.approx(123.4), "xmp_above_ground")


@needs_exiftool
def test_pix4d_pitch_zero_is_nadir(tmp_path):
    data = _tagged(tmp_path, "-XMP-Camera:Pitch=0", "-XMP-Camera:Yaw=270", "-XMP-Camera:Roll=3")
    x = read_xmp(data)
    assert (x.yaw, x.pitch, x.roll, x.vendor) == (270.0, -90.0, 3.0, "pix4d")
    assert read_xmp(_tagged(tmp_path, "-XMP-Camera:Pitch=60")).pitch == -30.0


@needs_exiftool
def test_xmp_exif_gps_and_exif_first(tmp_path):
    # XMP-exif has no Ref tags: ExifTool writes "10,30.0S"
    data = _tagged(tmp_path, "-XMP-exif:GPSLatitude=10.5 S", "-XMP-exif:GPSLongitude=20.25 W",
                   "-XMP-exif:GPSAltitude=300", "-XMP-exif:GPSAltitudeRef=Above Sea Level")
    x = read_xmp(data)
    assert (x.lat, x.lon, x.alt_msl) == (pytest.approx(-10.5), pytest.approx(-20.25), 300.0)
    both = _tagged(tmp_path, "-GPSLatitude=1", "-GPSLatitudeRef=N", "-GPSLongitude=2",
                   "-GPSLongitudeRef=E", "-XMP-drone-dji:GPSLatitude=47",
                   "-XMP-drone-dji:GPSLongitude=8")
    pose = frame_pose(read_exif(both), read_xmp(both))
    assert (pose.lat, pose.lon) == (pytest.approx(1.0), pytest.approx(2.0))  # EXIF wins


@needs_exiftool
def test_exif_only_and_no_position(tmp_path):
    data = _tagged(tmp_path, "-GPSLatitude=47.1", "-GPSLatitudeRef=N", "-GPSLongitude=8.2",
                   "-GPSLongitudeRef=E", "-GPSAltitude=650", "-GPSAltitudeRef=0")
    pose = frame_pose(read_exif(data), read_xmp(data), cfg=PoseConfig(ground_elevation_m=500.0))
    assert (pose.lat, pose.alt_msl) == (pytest.approx(47.1), pytest.approx(650.0))
    assert (pose.alt_agl, pose.agl_source) == (pytest.approx(150.0), "config_ground")
    assert (pose.pitch, pose.yaw, pose.pose_source) == (-90.0, None, "nadir_heading_unknown")
    assert "heading_unknown" in [w.reason for w in pose.warnings]
    bare = _tagged(tmp_path, "-Artist=nobody")
    pose = frame_pose(read_exif(bare), read_xmp(bare))
    assert pose.lat is None and pose.alt_agl is None
    assert {"no_position", "no_agl"} <= {w.reason for w in pose.warnings}


def test_agl_rules_in_order_and_negative_refused():
    x = XmpInfo(rel_alt=-3.0, pitch=-90.0, yaw=0.0)
    pose = frame_pose(None, x, Telemetry(agl=42.0, heading=90.0))
    assert (pose.alt_agl, pose.agl_source, pose.pose_source) == (42.0, "telemetry", "gimbal")
    assert "negative_agl" in [w.reason for w in pose.warnings]
    pose = frame_pose(None, XmpInfo(), Telemetry(heading=-90.0))
    assert (pose.yaw, pose.pitch, pose.pose_source) == (270.0, -90.0, "telemetry")


BOMB = b"""<?xpacket begin=''?><!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<x:xmpmeta xmlns:x="adobe:ns:meta/">&lol3;</x:xmpmeta>"""


def test_xml_bomb_malformed_and_oversized_packets_are_warnings():
    for data, reason in (
        (BOMB, "refused"),
        (b"<x:xmpmeta><rdf:RDF></x:xmpmeta>", "malformed"),
        (b"<x:xmpmeta>" + b" " * MAX_XMP_BYTES + b"</x:xmpmeta>", "exceeds"),
    ):
        x = read_xmp(data)
        assert x.lat is None and x.pitch is None
        assert [w.reason for w in x.warnings] == ["xmp_unreadable"]
        assert reason in x.warnings[0].message


def test_absurd_pitch_is_none_with_a_warning():
    packet = b"""<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF
      xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description
      xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" drone-dji:GimbalPitchDegree="-200"
      drone-dji:GimbalYawDegree="10"/></rdf:RDF></x:xmpmeta>"""
    x = read_xmp(packet)
    assert x.pitch is None and [w.reason for w in x.warnings] == ["absurd_pitch"]
    assert frame_pose(None, x).pose_source == "nadir_heading_unknown"
