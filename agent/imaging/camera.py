"""Pinhole camera intrinsics (the interior parameters) from EXIF, XMP or config.

Pixel coordinates are continuous: (0, 0) is the top-left corner of the top-left pixel, x grows
to the right and y downwards, so the image centre is (width / 2, height / 2).

The focal length in pixels comes from the first source that applies:

1. DJI ``CalibratedFocalLength`` (XMP, pixels at full resolution): the factory calibration;
2. EXIF FocalLength with FocalPlaneXResolution/FocalPlaneResolutionUnit: exact;
3. EXIF FocalLengthIn35mmFilm. Convention: the 35 mm equivalent matches the *diagonal* field of
   view, so f_px = f35 * hypot(width, height) / 43.27 (the diagonal of 36 x 24 mm film);
4. config: ``hfov_deg``, or ``focal_mm`` with ``sensor_width_mm``.

Pixel sizes given at the sensor's full resolution are scaled to the decoded image's width. The
principal point is the image centre unless the file (DJI CalibratedOpticalCenterX/Y) or the config
says otherwise. Lens distortion is not modelled (DJI DewarpData is kept on XmpInfo, unused).
A source with nonsense (f <= 0, FOV >= 180 degrees) is refused with a warning and the next one is
tried.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass

from agent.imaging.xmp import GeoWarning, XmpInfo

log = logging.getLogger(__name__)

FILM_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 43.27 mm
_MM_PER_UNIT = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # FocalPlaneResolutionUnit: inch, cm, mm, um


@dataclass(frozen=True)
class CameraExif:
    """The EXIF tags the camera model needs. Every field may be None."""

    focal_mm: float | None = None
    focal_35mm: float | None = None
    focal_plane_x_res: float | None = None  # pixels per unit, at pixel_x_dimension wide
    focal_plane_unit: int | None = None
    pixel_x_dimension: int | None = None  # the width the focal-plane resolution refers to
    model: str | None = None  # EXIF Image Model (e.g. FC6310): picks the config's overrides


@dataclass(frozen=True)
class CameraOverrides:
    """Camera settings from config, used when the file says nothing usable."""

    hfov_deg: float | None = None
    focal_mm: float | None = None
    sensor_width_mm: float | None = None
    cx: float | None = None
    cy: float | None = None


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera: focal lengths and principal point in pixels, for one image size."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    source: str  # which rule gave the focal length: xmp_calibrated, exif_focal_plane, ...

    @property
    def hfov_deg(self) -> float:
        return math.degrees(2 * math.atan(self.width / 2 / self.fx))


def _ratio(tags, key: str) -> float | None:
    tag = tags.get(key)
    if tag is None or not getattr(tag, "values", None):
        return None
    v = tag.values[0]
    try:
        value = float(v.num) / float(v.den) if hasattr(v, "den") else float(v)
    except (ValueError, ZeroDivisionError, TypeError):
        return None
    return value if math.isfinite(value) else None


def read_camera_exif(data: bytes) -> CameraExif:
    """The focal-length tags of a file's EXIF. Never raises: broken EXIF gives an empty result."""
    try:
        import exifread

        tags = exifread.process_file(io.BytesIO(data), details=False)
    except Exception as exc:  # broken EXIF costs the camera model, never the frame
        log.debug("EXIF unreadable for the camera model: %s", exc)
        return CameraExif()
    unit = _ratio(tags, "EXIF FocalPlaneResolutionUnit")
    width = _ratio(tags, "EXIF ExifImageWidth")
    model = tags.get("Image Model")
    return CameraExif(
        focal_mm=_ratio(tags, "EXIF FocalLength"),
        focal_35mm=_ratio(tags, "EXIF FocalLengthIn35mmFilm"),
        focal_plane_x_res=_ratio(tags, "EXIF FocalPlaneXResolution"),
        focal_plane_unit=None if unit is None else int(unit),
        pixel_x_dimension=None if width is None else int(width),
        model=str(model.values).strip(" \x00") or None if model is not None else None,
    )


def _candidates(exif: CameraExif, width: int, height: int, xmp: XmpInfo | None, cfg):
    """(source, focal length in pixels or None) for each rule, in order."""
    scale = width / exif.pixel_x_dimension if exif.pixel_x_dimension else 1.0
    yield "xmp_calibrated", None if xmp is None or xmp.focal_px is None else xmp.focal_px * scale
    mm_per_unit = _MM_PER_UNIT.get(exif.focal_plane_unit or 2)  # EXIF default unit: inch
    if exif.focal_mm is not None and exif.focal_plane_x_res and mm_per_unit:
        yield "exif_focal_plane", exif.focal_mm * exif.focal_plane_x_res / mm_per_unit * scale
    if exif.focal_35mm is not None:
        yield "exif_35mm", exif.focal_35mm * math.hypot(width, height) / FILM_DIAGONAL_MM
    if cfg.hfov_deg is not None:
        if not 0.0 < cfg.hfov_deg < 180.0:
            yield "config_hfov", -1.0  # refused below with the FOV reason
        else:
            yield "config_hfov", width / 2 / math.tan(math.radians(cfg.hfov_deg) / 2)
    if cfg.focal_mm is not None and cfg.sensor_width_mm:
        yield "config_focal", cfg.focal_mm / cfg.sensor_width_mm * width


def intrinsics(
    exif: CameraExif,
    width: int,
    height: int,
    overrides: CameraOverrides | None = None,
    xmp: XmpInfo | None = None,
) -> tuple[Intrinsics | None, list[GeoWarning]]:
    """The pinhole camera of an image ``width`` x ``height``, and the warnings of every source
    refused on the way; None (with a ``no_intrinsics`` warning) when no source is usable."""
    cfg = overrides or CameraOverrides()
    warnings: list[GeoWarning] = []
    if width <= 0 or height <= 0:
        return None, [GeoWarning("bad_image_size", f"image size {width}x{height}")]
    for source, f in _candidates(exif, width, height, xmp, cfg):
        if f is None:
            continue
        if not math.isfinite(f) or f <= 0:
            reason = "bad_fov" if source == "config_hfov" else "bad_focal"
            warnings.append(GeoWarning(reason, f"{source}: focal length or FOV is not usable"))
            continue
        cx = cfg.cx if cfg.cx is not None else (xmp.cx if xmp and xmp.cx is not None else None)
        cy = cfg.cy if cfg.cy is not None else (xmp.cy if xmp and xmp.cy is not None else None)
        intr = Intrinsics(
            fx=f, fy=f, cx=width / 2 if cx is None else cx, cy=height / 2 if cy is None else cy,
            width=width, height=height, source=source,
        )
        return intr, warnings
    warnings.append(GeoWarning("no_intrinsics", "no focal length in EXIF, XMP or config"))
    return None, warnings
