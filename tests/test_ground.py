"""Ray casting against closed forms and against cameratransform, an independent implementation."""

import math

import numpy as np
import pytest

from agent.imaging.camera import Intrinsics
from agent.imaging.ground import (
    bench_us,
    frame_corners,
    geodetic_to_enu,
    ground_points,
    tile_centres,
)
from agent.imaging.pose import FramePose

LAT, LON, MSL = 47.3769, 8.5417, 600.0


def _intr(f=3000.0, w=4000, h=3000):
    return Intrinsics(fx=f, fy=f, cx=w / 2, cy=h / 2, width=w, height=h, source="test")


def _pose(yaw=0.0, pitch=-90.0, roll=0.0, agl=100.0, **kw):
    return FramePose(lat=LAT, lon=LON, alt_msl=MSL, alt_agl=agl, yaw=yaw, pitch=pitch, roll=roll,
                     **kw)


def _enu(lonlat, agl=100.0):
    return geodetic_to_enu(lonlat[:, 1], lonlat[:, 0], MSL - agl, LAT, LON, MSL)


def test_nadir_centre_is_below_and_top_faces_north():
    intr = _intr()
    pts, warnings = ground_points(_pose(), intr, np.array([[2000, 1500], [2000, 0], [4000, 1500]]))
    enu = _enu(pts)
    assert warnings == []
    assert np.allclose(enu[0, :2], 0, atol=0.01)
    assert enu[1, 1] == pytest.approx(1500 / 3000 * 100, abs=0.01)  # top edge: north
    assert enu[2, 0] == pytest.approx(2000 / 3000 * 100, abs=0.01)  # right edge: east


def test_pitch_minus_60_at_yaw_0_puts_the_centre_tan30_agl_north():
    pts, _ = ground_points(_pose(pitch=-60.0, agl=120.0), _intr(), np.array([[2000, 1500]]))
    e, n, _ = _enu(pts, 120.0)[0]
    assert n == pytest.approx(math.tan(math.radians(30)) * 120, abs=0.01)
    assert e == pytest.approx(0, abs=0.01)


def test_yaw_90_looks_east_and_positive_roll_turns_right_side_down():
    centre = np.array([[2000, 1500]])
    east, _ = ground_points(_pose(yaw=90.0, pitch=-45.0), _intr(), centre)
    assert _enu(east)[0, 0] == pytest.approx(100, abs=0.01)
    rolled, _ = ground_points(_pose(pitch=-90.0, roll=10.0), _intr(), centre)
    # at nadir, "behind" the camera is above it: turned clockwise, the image top swings east
    top, _ = ground_points(_pose(pitch=-90.0, roll=10.0), _intr(), np.array([[2000, 0]]))
    assert _enu(rolled)[0, :2] == pytest.approx([0, 0], abs=0.01)
    r = math.radians(10)
    assert _enu(top)[0, :2] == pytest.approx([50 * math.sin(r), 50 * math.cos(r)], abs=0.01)


def test_ray_above_the_horizon_has_no_position():
    pts, warnings = ground_points(_pose(pitch=-5.0), _intr(), np.array([[2000, 0], [2000, 3000]]))
    assert np.isnan(pts[0]).all() and np.isfinite(pts[1]).all()
    assert [w.reason for w in warnings] == ["ray_above_horizon"]


def test_unknown_heading_places_only_the_principal_point():
    pose = _pose(yaw=None)
    pts, warnings = ground_points(pose, _intr(), np.array([[2000, 1500], [0, 0]]))
    assert np.isfinite(pts[0]).all() and np.isnan(pts[1]).all()
    assert "heading_unknown" in [w.reason for w in warnings]


def test_no_pose_gives_nan_and_a_warning():
    pts, warnings = ground_points(FramePose(), _intr(), np.array([[1, 1]]))
    assert np.isnan(pts).all() and warnings[0].reason == "no_pose"


def test_tile_centres_and_corners():
    c = tile_centres(4000, 3000, 500)
    assert c.shape == (48, 2)
    assert c[0].tolist() == [250, 250] and c[-1].tolist() == [3750, 2750]
    assert tile_centres(1000, 700, 500)[-1].tolist() == [750, 600]
    assert frame_corners(40, 30).tolist() == [[0, 0], [40, 0], [40, 30], [0, 30]]


def test_agrees_with_cameratransform_on_random_poses():
    ct = pytest.importorskip("cameratransform")
    rng = np.random.default_rng(12)
    lenses = [_intr(f=3000.0), _intr(f=1200.0)]  # about 67 and 118 degrees across
    pixels = np.vstack([tile_centres(4000, 3000, 500), frame_corners(4000, 3000)])
    compared = 0
    for i in range(240):
        intr = lenses[i % 2]
        yaw, pitch = rng.uniform(0, 360), rng.uniform(-90, -20)
        roll, agl = rng.uniform(-10, 10), rng.uniform(20, 400)
        pts, _ = ground_points(_pose(yaw, pitch, roll, agl), intr, pixels)
        cam = ct.Camera(
            ct.RectilinearProjection(focallength_px=intr.fx, image=(intr.width, intr.height)),
            ct.SpatialOrientation(elevation_m=agl, tilt_deg=pitch + 90, roll_deg=-roll,
                                  heading_deg=yaw),
        )
        _, rays = cam.getRay(pixels, normed=True)
        # cameratransform's ground is a plane; ours is the ellipsoid, which falls away under far
        # rays. Compare where its ray crosses the height our point has in the local ENU frame.
        ours = _enu(pts, agl)
        misses = rays[:, 2] >= 0
        assert np.isnan(pts[misses]).all()
        steep = rays[:, 2] < -0.02
        assert np.isfinite(pts[steep]).all()
        t = ours[steep, 2] / rays[steep, 2]  # its camera is at height agl, ours at ENU 0
        theirs = rays[steep, :2] * t[:, None]
        assert np.abs(theirs - ours[steep, :2]).max() < 0.5, (yaw, pitch, roll, agl)
        compared += int(steep.sum())
    assert compared > 200 * 40


def test_bench_us_reports_the_cost_per_frame(capsys):
    # A figure, not a timed assertion: speed is measured by skysift bench, never asserted here.
    us = bench_us(50)
    assert us > 0 and math.isfinite(us)
    assert "us per frame" in capsys.readouterr().out
