"""A frame's pose: where the camera was, how high above the ground, which way it looked, and
which rule gave each answer (``agl_source``, ``pose_source``), so nothing is silently guessed.

Height above ground (``alt_agl``, metres), from the first rule that applies:

1. ``xmp_above_ground``: the drone's own above-ground altitude
   (Parrot Camera:AboveGroundAltitude);
2. ``xmp_relative``: XMP RelativeAltitude, above the take-off point, i.e. the ground is taken as
   flat at the take-off height;
3. ``telemetry``: an AGL from the flight log or live telemetry;
4. ``dem``: altitude above sea level (EXIF GPS, else XMP) minus the DEM height under the drone;
5. ``config_ground``: altitude above sea level minus the configured ground elevation.

A rule whose answer is negative or zero is refused with a warning and the next one is tried.
``alt_msl`` (orthometric, the DEM's datum) is kept apart whichever rule gave ``alt_agl``.

Angles (internal convention, see agent.imaging.xmp): ``gimbal`` from XMP; else ``telemetry``
heading with the camera taken as pointing straight down; else ``nadir_heading_unknown``: pitch
-90, roll 0, yaw None, with a warning. Position: EXIF GPS, else XMP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agent.imaging.dem import Terrain
from agent.imaging.xmp import GeoWarning, XmpInfo, check_angles


@dataclass(frozen=True)
class Telemetry:
    """What the flight controller said at the frame's time. Every field may be None."""

    agl: float | None = None  # metres above ground
    heading: float | None = None  # degrees clockwise from true north


@dataclass(frozen=True)
class PoseConfig:
    """Config the pose rules may fall back on."""

    ground_elevation_m: float | None = None  # orthometric, same datum as the drone's altitude


@dataclass
class FramePose:
    """The exterior orientation of one frame; every value may be None, and ``warnings`` says why."""

    lat: float | None = None
    lon: float | None = None
    alt_msl: float | None = None
    alt_agl: float | None = None
    agl_source: str = "none"
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    pose_source: str = "none"
    warnings: list[GeoWarning] = field(default_factory=list)


def _agl_candidates(xmp: XmpInfo, telemetry: Telemetry, cfg: PoseConfig, alt_msl, ground):
    yield "xmp_above_ground", xmp.agl
    yield "xmp_relative", xmp.rel_alt
    yield "telemetry", telemetry.agl
    if alt_msl is not None:
        yield "dem", None if ground is None else alt_msl - ground
        if cfg.ground_elevation_m is not None:
            yield "config_ground", alt_msl - cfg.ground_elevation_m


def _ground_under(dem: Terrain | None, lat, lon, warnings: list[GeoWarning]) -> float | None:
    if dem is None or lat is None or lon is None:
        return None
    h = float(dem.heights(np.array([lon]), np.array([lat]))[0])
    if np.isnan(h):
        where = f"{lat:.6f},{lon:.6f}"
        warnings.append(GeoWarning("dem_no_coverage", f"the DEM does not cover {where}"))
        return None
    return h


def frame_pose(
    exif,
    xmp: XmpInfo | None,
    telemetry: Telemetry | None = None,
    cfg: PoseConfig | None = None,
    dem: Terrain | None = None,
) -> FramePose:
    """Decide a frame's pose from its EXIF (an ``agent.imaging.ExifInfo``: lat, lon, alt), its XMP,
    telemetry and config. Never raises; each missing or refused value leaves a warning."""
    xmp = xmp or XmpInfo()
    telemetry = telemetry or Telemetry()
    cfg = cfg or PoseConfig()
    pose = FramePose(warnings=list(xmp.warnings))
    if exif is not None and exif.lat is not None and exif.lon is not None:
        pose.lat, pose.lon = exif.lat, exif.lon
    else:
        pose.lat, pose.lon = xmp.lat, xmp.lon
    if pose.lat is None:
        pose.warnings.append(GeoWarning("no_position", "no GPS position in EXIF or XMP"))
    exif_alt = None if exif is None else exif.alt
    pose.alt_msl = exif_alt if exif_alt is not None else xmp.alt_msl
    ground = _ground_under(dem, pose.lat, pose.lon, pose.warnings)
    for source, agl in _agl_candidates(xmp, telemetry, cfg, pose.alt_msl, ground):
        if agl is None:
            continue
        if not agl > 0:
            pose.warnings.append(GeoWarning("negative_agl", f"{source} gives {agl:g} m AGL"))
            continue
        pose.alt_agl, pose.agl_source = agl, source
        break
    else:
        pose.warnings.append(GeoWarning("no_agl", "no rule gives a height above ground"))
    _angles(pose, xmp, telemetry)
    return pose


def _angles(pose: FramePose, xmp: XmpInfo, telemetry: Telemetry) -> None:
    if xmp.pitch is not None:
        pose.yaw = xmp.yaw if xmp.yaw is not None else xmp.flight_yaw
        pose.pitch, pose.roll = xmp.pitch, xmp.roll if xmp.roll is not None else 0.0
        pose.pose_source = "gimbal"
        if pose.yaw is not None:
            return
        pose.warnings.append(GeoWarning("heading_unknown", "XMP has a pitch but no yaw"))
        return
    heading, _, _ = check_angles(telemetry.heading, None, None, pose.warnings, "telemetry")
    pose.pitch, pose.roll = -90.0, 0.0
    if heading is not None:
        pose.yaw, pose.pose_source = heading, "telemetry"
        return
    pose.pose_source = "nadir_heading_unknown"
    pose.warnings.append(
        GeoWarning("heading_unknown", "no gimbal angles or heading: nadir, heading unknown")
    )
