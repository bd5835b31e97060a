"""Ray casting against a real GeoTIFF DEM written by rasterio."""

import math

import numpy as np
import pytest

from agent.imaging.camera import Intrinsics
from agent.imaging.dem import Dem, DemError
from agent.imaging.ground import geodetic_to_enu, ground_points
from agent.imaging.pose import FramePose, frame_pose
from agent.imaging.xmp import XmpInfo

rasterio = pytest.importorskip("rasterio")
LAT, LON = 47.0, 8.0
INTR = Intrinsics(fx=3000.0, fy=3000.0, cx=2000.0, cy=1500.0, width=4000, height=3000, source="t")


def _slope_dem(path, crs="EPSG:32632", slope=0.1):
    """A 2 km square in UTM 32N around (LAT, LON): height 400 m + slope x metres north."""
    from pyproj import Transformer
    from rasterio.transform import from_origin

    e0, n0 = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True).transform(LON, LAT)
    cell, size = 5.0, 400
    north = n0 + 1000 - (np.arange(size) + 0.5) * cell
    z = np.repeat((400 + slope * (north - n0))[:, None], size, axis=1).astype("float32")
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=1,
                       dtype="float32", crs=crs, transform=from_origin(e0 - 1000, n0 + 1000,
                                                                        cell, cell)) as dst:
        dst.write(z, 1)
    return str(path)


def test_slope_moves_the_hit_by_the_known_amount(tmp_path):
    dem = Dem(_slope_dem(tmp_path / "slope.tif"))
    pose = FramePose(lat=LAT, lon=LON, alt_msl=500.0, alt_agl=100.0, yaw=0.0, pitch=-45.0, roll=0.0)
    centre = np.array([[2000, 1500]])
    flat, _ = ground_points(pose, INTR, centre)
    hilly, warnings = ground_points(pose, INTR, centre, dem)
    assert warnings == []
    n_flat = geodetic_to_enu(flat[0, 1], flat[0, 0], 400.0, LAT, LON, 500.0)[1]
    n_dem = geodetic_to_enu(hilly[0, 1], hilly[0, 0], 400.0, LAT, LON, 500.0)[1]
    # at 45 deg the ray drops 1 m per metre north; the ground rises 0.1 m per metre north:
    # they meet at n = 100 / 1.1, not 100 (the UTM scale factor near 8 E is 0.9996)
    assert n_flat == pytest.approx(100.0, abs=0.05)
    assert n_dem == pytest.approx(100.0 / 1.1, abs=0.2)
    assert n_flat - n_dem == pytest.approx(100.0 - 100.0 / 1.1, abs=0.2)


def test_flat_dem_matches_flat_ground(tmp_path):
    dem = Dem(_slope_dem(tmp_path / "flat.tif", slope=0.0))
    pose = FramePose(lat=LAT, lon=LON, alt_msl=500.0, alt_agl=100.0, yaw=33.0, pitch=-70.0,
                     roll=4.0)
    px = np.array([[0, 0], [2000, 1500], [4000, 3000]])
    a, _ = ground_points(pose, INTR, px)
    b, _ = ground_points(pose, INTR, px, dem)
    ea = geodetic_to_enu(a[:, 1], a[:, 0], 400.0, LAT, LON, 500.0)
    eb = geodetic_to_enu(b[:, 1], b[:, 0], 400.0, LAT, LON, 500.0)
    assert np.abs(ea - eb).max() < 0.05


def test_dem_agl_rule_and_a_dem_that_does_not_cover(tmp_path):
    dem = Dem(_slope_dem(tmp_path / "slope.tif"))
    from agent.imaging import ExifInfo

    pose = frame_pose(ExifInfo(lat=LAT, lon=LON, alt=520.0), XmpInfo(pitch=-30.0, yaw=0.0), dem=dem)
    assert (pose.alt_agl, pose.agl_source) == (pytest.approx(120.0, abs=0.01), "dem")
    # looking far north, the ray leaves the 2 km DEM before it reaches the ground
    far = FramePose(lat=LAT, lon=LON, alt_msl=900.0, alt_agl=500.0, yaw=0.0, pitch=-15.0, roll=0.0)
    pts, warnings = ground_points(far, INTR, np.array([[2000, 1500]]), dem)
    assert np.isnan(pts).all() and [w.reason for w in warnings] == ["dem_no_coverage"]
    away = frame_pose(ExifInfo(lat=LAT + 1, lon=LON, alt=520.0), XmpInfo(), dem=dem)
    assert away.alt_agl is None and "dem_no_coverage" in [w.reason for w in away.warnings]


def test_dem_in_an_unsupported_crs_is_refused(tmp_path):
    with pytest.raises(DemError) as err:
        Dem(_slope_dem(tmp_path / "feet.tif", crs="EPSG:2227"))  # California III, US feet
    assert err.value.reason == "dem_unsupported_crs"
    assert math.isfinite(Dem(_slope_dem(tmp_path / "ok.tif")).bounds()[1])
