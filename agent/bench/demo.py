"""`skysift demo`: a sample flight to try the agent on, with nothing but the shared tiles.

The frames are the bench's synthetic 12 MP aerial frames (:func:`agent.bench.workloads.make_frames`),
re-tagged as one survey a mapping drone would fly: a lawnmower pattern of parallel lines at
50 m above ground, the camera straight down (or 20 degrees off nadir, pitch -70), with about 70 %
overlap along and across the lines. Every frame carries EXIF GPS (position, altitude, time)
and a DJI-style XMP pose (``drone-dji:`` GpsLatitude/GpsLongitude, Absolute/RelativeAltitude,
Gimbal{Yaw,Pitch,Roll}Degree, FlightYawDegree, CalibratedFocalLength and optical centre, as
agent.imaging.xmp reads them), so that ``skysift report`` has something to place on a map.
"""

from __future__ import annotations

import logging
import math
import struct
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from agent.bench.workloads import FRAME_H, FRAME_W, exif_block, make_frames

log = logging.getLogger(__name__)

#: where the survey starts: a city block of Kahramanmaras (Turkey), ground 500 m above sea level
ORIGIN_LAT, ORIGIN_LON, GROUND_MSL = 37.5850, 36.9300, 500.0
AGL_M = 50.0
OVERLAP = 0.70
#: a 1-inch 12 MP survey camera (8.8 mm lens on a 13.2 mm wide sensor): 2667 px focal length
FOCAL_PX = 8.8 / 13.2 * FRAME_W
SPEED_M_S = 8.0
FLIGHT = "demo-survey"
_APP1_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_M_PER_DEG_LAT = 111_320.0


@dataclass(frozen=True)
class Pose:
    """Where one demo frame was taken, and which way the camera looked (XMP's convention)."""

    lat: float
    lon: float
    alt_msl: float
    rel_alt: float
    yaw: float  # degrees clockwise from north: the direction of flight
    pitch: float  # -90: straight down
    when: datetime


def survey_poses(n: int, pitch: float = -90.0, agl: float = AGL_M, overlap: float = OVERLAP) -> list[Pose]:
    """``n`` poses along a lawnmower survey: lines east then west, each line ``per_line`` frames.

    The camera's long side (4000 px) lies across the line, so the spacing along a line is
    (1 - overlap) of the footprint's short side and the spacing between lines (1 - overlap) of
    its long side; both at nadir (an oblique footprint is longer, so the overlap only grows).
    """
    ground_w = FRAME_W / FOCAL_PX * agl  # across the line
    ground_h = FRAME_H / FOCAL_PX * agl  # along the line
    step, line_gap = (1 - overlap) * ground_h, (1 - overlap) * ground_w
    per_line = max(1, math.ceil(math.sqrt(n)))
    m_per_deg_lon = _M_PER_DEG_LAT * math.cos(math.radians(ORIGIN_LAT))
    t0 = datetime(2026, 2, 6, 9, 30, 0, tzinfo=timezone.utc)
    poses: list[Pose] = []
    for i in range(n):
        line, k = divmod(i, per_line)
        eastward = line % 2 == 0
        along = (k if eastward else per_line - 1 - k) * step
        poses.append(Pose(
            lat=ORIGIN_LAT - line * line_gap / _M_PER_DEG_LAT,  # lines step south
            lon=ORIGIN_LON + along / m_per_deg_lon,
            alt_msl=GROUND_MSL + agl,
            rel_alt=agl,
            yaw=90.0 if eastward else 270.0,
            pitch=pitch,
            when=t0 + timedelta(seconds=i * step / SPEED_M_S + line * 10.0),  # 10 s per turn
        ))
    return poses


def xmp_segment(pose: Pose) -> bytes:
    """A JPEG APP1 segment with a DJI-style XMP packet for ``pose``."""
    attrs = {
        "GpsLatitude": f"{pose.lat:+.8f}",
        "GpsLongitude": f"{pose.lon:+.8f}",
        "AbsoluteAltitude": f"{pose.alt_msl:+.2f}",
        "RelativeAltitude": f"{pose.rel_alt:+.2f}",
        "GimbalYawDegree": f"{pose.yaw:+.1f}",
        "GimbalPitchDegree": f"{pose.pitch:+.1f}",
        "GimbalRollDegree": "+0.0",
        "FlightYawDegree": f"{pose.yaw:+.1f}",
        "CalibratedFocalLength": f"{FOCAL_PX:.3f}",
        "CalibratedOpticalCenterX": f"{FRAME_W / 2:.1f}",
        "CalibratedOpticalCenterY": f"{FRAME_H / 2:.1f}",
    }
    body = " ".join(f'drone-dji:{k}="{v}"' for k, v in attrs.items())
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="DJI Meta Data" '
        f'xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" {body}/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()
    payload = _APP1_XMP + packet
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def retag(jpeg: bytes, pose: Pose, index: int) -> bytes:
    """``jpeg`` with its APP0/APP1 segments replaced by EXIF GPS and XMP for ``pose``: the
    EXIF position must be the pose's, or a reader that prefers one would disagree with one
    that prefers the other."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    pos = 2
    while jpeg[pos] == 0xFF and jpeg[pos + 1] in (0xE0, 0xE1):
        pos += 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
    exif = exif_block(pose.lat, pose.lon, pose.alt_msl, pose.when, index)
    return b"\xff\xd8" + exif + xmp_segment(pose) + jpeg[pos:]


def write_demo(data_dir: Path, out: Path, n: int, pitch: float = -90.0) -> list[Path]:
    """Write ``n`` survey frames to ``out/<FLIGHT>/`` (the folder ``skysift run --folder out``
    takes as one flight) and return their paths; old demo frames there are replaced."""
    if n < 1:
        raise ValueError("a demo flight needs at least one frame")
    dest = out / FLIGHT
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("DEMO_*.jpg"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="skysift-demo-") as tmp:
        # tile_px 128, model.tile_px's default: each tile the agent cuts is one shared tile, as
        # it was photographed, so the labels mean something (500 px upscaled tiles do not)
        frames = make_frames(data_dir, Path(tmp), n, tile_px=128).files
        paths = []
        for i, (src, pose) in enumerate(zip(frames, survey_poses(n, pitch), strict=True)):
            path = dest / f"DEMO_{i:04d}.jpg"
            path.write_bytes(retag(src.read_bytes(), pose, i))
            paths.append(path)
    log.info("wrote %d demo frames to %s", n, dest)
    return paths
