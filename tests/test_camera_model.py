"""Pinhole intrinsics from EXIF, XMP and config, and refusal of nonsense."""

import math

import pytest

from agent.imaging.camera import CameraExif, CameraOverrides, intrinsics
from agent.imaging.xmp import XmpInfo


def test_focal_plane_resolution_is_exact_and_scaled_to_the_decoded_width():
    exif = CameraExif(focal_mm=8.8, focal_plane_x_res=5472 / 13.2, focal_plane_unit=4,
                      pixel_x_dimension=5472)
    intr, warnings = intrinsics(exif, 2736, 1824)
    assert intr.source == "exif_focal_plane" and warnings == []
    assert intr.fx == pytest.approx(8.8 * 5472 / 13.2 / 2)
    assert (intr.cx, intr.cy) == (1368, 912)


def test_35mm_uses_the_diagonal():
    intr, _ = intrinsics(CameraExif(focal_35mm=24.0), 4000, 3000)
    assert intr.fx == pytest.approx(24.0 * 5000 / math.hypot(36, 24))
    assert intr.source == "exif_35mm"


def test_xmp_calibration_and_principal_point_win():
    xmp = XmpInfo(focal_px=3700.0, cx=2010.0, cy=1490.0)
    intr, _ = intrinsics(CameraExif(focal_35mm=24.0), 4000, 3000, xmp=xmp)
    assert (intr.fx, intr.cx, intr.cy, intr.source) == (3700.0, 2010.0, 1490.0, "xmp_calibrated")


def test_config_fallbacks():
    intr, _ = intrinsics(CameraExif(), 4000, 3000, CameraOverrides(hfov_deg=90.0))
    assert intr.fx == pytest.approx(2000.0) and intr.hfov_deg == pytest.approx(90.0)
    intr, _ = intrinsics(CameraExif(), 4000, 3000, CameraOverrides(focal_mm=10, sensor_width_mm=20))
    assert (intr.fx, intr.source) == (2000.0, "config_focal")


def test_nonsense_is_refused_with_a_reason():
    intr, warnings = intrinsics(CameraExif(focal_mm=0.0, focal_plane_x_res=100.0), 400, 300,
                                CameraOverrides(hfov_deg=180.0))
    assert intr is None
    assert [w.reason for w in warnings] == ["bad_focal", "bad_fov", "no_intrinsics"]
    intr, warnings = intrinsics(CameraExif(focal_35mm=-5.0), 400, 300, CameraOverrides(hfov_deg=60))
    assert intr.source == "config_hfov" and [w.reason for w in warnings] == ["bad_focal"]
