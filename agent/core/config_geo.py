"""The configuration sections of where a frame was taken and where on the ground it lies:
``geotag`` (track, clocks, ground height, DEM) and ``camera`` (lens fallbacks, per model).
:mod:`agent.core.config` assembles them with the other sections; import them from there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from agent.core.config_values import DAY_S, Section, check_timezone

#: camera clock minus GPS time: a camera never set since its battery died is decades off
CLOCK_OFFSET_MAX_S = 100 * 366 * DAY_S
#: ground lies between -430 m (the Dead Sea shore) and 8849 m: past 10 km either way is a typo
ELEVATION_MAX_M = 10_000.0
#: no camera lens or sensor is a metre long
FOCAL_MAX_MM = 1_000.0
CAMERA_MODELS_MAX = 64


class GeotagConfig(Section):
    track: Path | None = Field(
        default=None, description="GPX or CSV (time,lat,lon[,alt]) track, interpolated by time."
    )
    max_gap_s: float = Field(
        default=30.0, gt=0, le=DAY_S,
        description="No position is interpolated across a longer track gap.",
    )
    clock_offset_s: float = Field(
        default=0.0, ge=-CLOCK_OFFSET_MAX_S, le=CLOCK_OFFSET_MAX_S,
        description="Added to camera capture times (camera clock minus GPS time).",
    )
    camera_timezone: Annotated[str, AfterValidator(check_timezone)] = Field(
        default="UTC", description="Time zone of EXIF DateTimeOriginal (it carries none)."
    )
    ground_elevation_m: float | None = Field(
        default=None, ge=-ELEVATION_MAX_M, le=ELEVATION_MAX_M,
        description="Ground height above sea level, when neither the drone nor a DEM gives AGL.",
    )
    dem: Path | None = Field(
        default=None, description="GeoTIFF DEM (metres) the rays are cast onto; loaded once."
    )
    srt: Literal["auto", "off"] = Field(
        default="auto",
        description="auto: a DJI .SRT flight log in the watched folder is a track for the "
        "frames taken while it ran; off: .SRT files are only ignored.",
    )


class CameraModelConfig(Section):
    """One camera's interior parameters, used when its files say nothing usable."""

    hfov_deg: float | None = Field(default=None, gt=0, lt=180)
    focal_mm: float | None = Field(default=None, gt=0, le=FOCAL_MAX_MM)
    sensor_width_mm: float | None = Field(default=None, gt=0, le=FOCAL_MAX_MM)


class CameraConfig(CameraModelConfig):
    vfov_deg: float | None = Field(default=None, gt=0, lt=180)
    models: dict[str, CameraModelConfig] = Field(
        default_factory=dict, max_length=CAMERA_MODELS_MAX,
        description="Per EXIF camera Model (e.g. FC6310), over the defaults above.",
    )
