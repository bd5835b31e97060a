"""Ray casting: from a frame's pose and camera to the ground position of any of its pixels.

Frames. Camera: x right, y down, z forward (the viewing direction), pixels as in
agent.imaging.camera. World: local East-North-Up at the camera, on the WGS84 ellipsoid, through
exact geodetic <-> ECEF formulas (Bowring's inverse: sub-millimetre at these heights), so the
earth's curvature is in the answer.

Rotation (camera -> ENU): start level, looking north (x east, y down, z north); then roll about
the viewing axis, then pitch about the camera's x axis, then yaw about up:
``R = Rz(-yaw) . Rx(pitch) . Ry(roll) . R0`` applied to camera vectors, where Rx, Ry, Rz turn
right-handed about East, North, Up; i.e. yaw, then pitch, then roll, intrinsic (Z-X'-Y'').
Signs: yaw clockwise from true north; pitch -90 straight down, 0 the
horizon; positive roll turns the camera clockwise as seen from behind (its right side goes down).
At pitch -90, yaw 0 the top of the image faces north. In cameratransform's terms: heading = yaw,
tilt = pitch + 90, roll_deg = -roll.

Ground: a :class:`agent.imaging.dem.Terrain`. Each ray is marched in coarse steps (about one DEM
cell) between the heights of the highest and the lowest ground, then the step that crosses the
surface is bisected (OpenAthena's resolveTarget, refined). Flat ground is a constant terrain:
the bracket is then one step and only the bisection runs. A ray that points above the horizon,
leaves the DEM or runs past ``MAX_RANGE_M`` gives NaN, never a wrong position.
"""

from __future__ import annotations

import math
import time

import numpy as np

from agent.imaging.camera import Intrinsics
from agent.imaging.dem import FlatGround, Terrain
from agent.imaging.pose import FramePose
from agent.imaging.xmp import GeoWarning

WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)
WGS84_B = WGS84_A * (1 - WGS84_F)
MAX_RANGE_M = 20_000.0  # slant range beyond which a hit is too grazing to trust
_MAX_STEPS = 4096  # coarse samples per ray: bounds the memory of one call
_TOL_M = 0.005  # bisection stops when the bracket is this short (along the ray)


def geodetic_to_ecef(lat, lon, h) -> np.ndarray:
    """WGS84 degrees and ellipsoidal metres to ECEF metres, shape (..., 3)."""
    phi, lam = np.radians(lat), np.radians(lon)
    n = WGS84_A / np.sqrt(1 - WGS84_E2 * np.sin(phi) ** 2)
    return np.stack(
        [(n + h) * np.cos(phi) * np.cos(lam), (n + h) * np.cos(phi) * np.sin(lam),
         (n * (1 - WGS84_E2) + h) * np.sin(phi)], axis=-1,
    )


def ecef_to_geodetic(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ECEF metres (..., 3) to WGS84 (lat, lon degrees, ellipsoidal height metres)."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    p = np.hypot(x, y)
    ep2 = (WGS84_A**2 - WGS84_B**2) / WGS84_B**2
    theta = np.arctan2(z * WGS84_A, p * WGS84_B)
    phi = np.arctan2(z + ep2 * WGS84_B * np.sin(theta) ** 3,
                     p - WGS84_E2 * WGS84_A * np.cos(theta) ** 3)
    n = WGS84_A / np.sqrt(1 - WGS84_E2 * np.sin(phi) ** 2)
    h = p / np.cos(phi) - n
    return np.degrees(phi), np.degrees(np.arctan2(y, x)), h


def enu_basis(lat: float, lon: float) -> np.ndarray:
    """3x3 matrix whose columns are East, North, Up at (lat, lon) in ECEF."""
    phi, lam = math.radians(lat), math.radians(lon)
    sp, cp, sl, cl = math.sin(phi), math.cos(phi), math.sin(lam), math.cos(lam)
    return np.array([[-sl, -sp * cl, cp * cl], [cl, -sp * sl, cp * sl], [0.0, cp, sp]])


def geodetic_to_enu(lat, lon, h, lat0: float, lon0: float, h0: float) -> np.ndarray:
    """Points in WGS84 to local ENU metres (..., 3) at (lat0, lon0, h0)."""
    d = geodetic_to_ecef(lat, lon, h) - geodetic_to_ecef(lat0, lon0, h0)
    return d @ enu_basis(lat0, lon0)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-ENU rotation for the internal convention (module docstring)."""
    y, p, r = math.radians(yaw), math.radians(pitch), math.radians(roll)
    r0 = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # columns: x->E, y->-U, z->N
    rz = np.array([[math.cos(y), math.sin(y), 0], [-math.sin(y), math.cos(y), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(r), 0, math.sin(r)], [0, 1, 0], [-math.sin(r), 0, math.cos(r)]])
    return rz @ rx @ ry @ r0


def ray_directions(intr: Intrinsics, yaw: float, pitch: float, roll: float,
                   pixels: np.ndarray) -> np.ndarray:
    """Unit ENU directions (N, 3) of the rays through ``pixels`` (N, 2) as (x, y)."""
    px = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    cam = np.empty((len(px), 3))
    cam[:, 0] = (px[:, 0] - intr.cx) / intr.fx
    cam[:, 1] = (px[:, 1] - intr.cy) / intr.fy
    cam[:, 2] = 1.0
    d = cam @ rotation(yaw, pitch, roll).T
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _height_above(origin, dirs_ecef, s, terrain: Terrain) -> np.ndarray:
    """Height of the ray points at distances ``s`` above the terrain (NaN: terrain not there)."""
    lat, lon, h = ecef_to_geodetic(origin + dirs_ecef * s[..., None])
    return h - terrain.heights(lon, lat)


def cast_rays(lat: float, lon: float, h: float, dirs_enu: np.ndarray,
              terrain: Terrain) -> tuple[np.ndarray, list[GeoWarning]]:
    """Ground (lon, lat) degrees (N, 2) of rays from a camera at (lat, lon, h) along unit ENU
    directions; NaN for a ray that misses, with one warning per kind of miss."""
    n = len(dirs_enu)
    out = np.full((n, 2), np.nan)
    warnings: list[GeoWarning] = []
    down = -dirs_enu[:, 2]
    aimed = down > 1e-6
    if (~aimed).any():
        warnings.append(GeoWarning("ray_above_horizon",
                                   f"{int((~aimed).sum())} rays point above the horizon"))
    zmin, zmax = terrain.bounds()
    if h <= zmin and aimed.any():
        return out, warnings + [GeoWarning("camera_below_ground", "the camera is below the ground")]
    safe = np.where(aimed, down, 1.0)
    s0 = np.maximum((h - zmax) / safe, 0.0)
    s1 = (h - zmin) / safe
    horiz = s1 * np.sqrt(1 - np.minimum(safe, 1.0) ** 2)
    s1 = (h - zmin + horiz**2 / WGS84_A + 1.0) / safe  # the ellipsoid falls away under a far ray
    far = aimed & (s0 > MAX_RANGE_M)
    if far.any():
        warnings.append(GeoWarning("beyond_range", f"{int(far.sum())} rays hit beyond "
                                   f"{MAX_RANGE_M:g} m"))
    live = np.flatnonzero(aimed & ~far)
    if live.size == 0:
        return out, warnings
    s0, s1 = s0[live], np.minimum(s1[live], MAX_RANGE_M)
    origin = geodetic_to_ecef(lat, lon, h)
    dirs = dirs_enu[live] @ enu_basis(lat, lon).T
    steps = int(min(_MAX_STEPS, max(2, math.ceil(float(np.max(s1 - s0)) / terrain.step_m) + 1)))
    s = s0[:, None] + (s1 - s0)[:, None] * np.linspace(0.0, 1.0, steps)[None, :]
    f = _height_above(origin, dirs[:, None, :], s, terrain)
    below = f <= 0
    gap = np.isnan(f)
    first = np.where(below.any(axis=1), below.argmax(axis=1), steps)
    first_gap = np.where(gap.any(axis=1), gap.argmax(axis=1), steps)
    hit = (first < steps) & (first < first_gap)
    uncovered = (first_gap <= first) & (first_gap < steps)
    if uncovered.any():
        warnings.append(GeoWarning("dem_no_coverage",
                                   f"{int(uncovered.sum())} rays leave the DEM before the ground"))
    missed = ~hit & ~uncovered
    if missed.any():
        warnings.append(GeoWarning("no_ground_hit",
                                   f"{int(missed.sum())} rays reach no ground within range"))
    rows = np.flatnonzero(hit)
    if rows.size == 0:
        return out, warnings
    k = first[rows]
    lo = s[rows, np.maximum(k - 1, 0)]
    hi = s[rows, k]
    d = dirs[rows]
    for _ in range(max(0, math.ceil(math.log2(max(float(np.max(hi - lo)), _TOL_M) / _TOL_M)))):
        mid = (lo + hi) / 2
        fm = _height_above(origin, d, mid, terrain)
        down_mid = ~(fm > 0)  # NaN counts as below: the hit is before it
        hi = np.where(down_mid, mid, hi)
        lo = np.where(down_mid, lo, mid)
    glat, glon, _ = ecef_to_geodetic(origin + d * ((lo + hi) / 2)[:, None])
    out[live[rows], 0], out[live[rows], 1] = glon, glat
    return out, warnings


def ground_points(pose: FramePose, intr: Intrinsics, pixels: np.ndarray,
                  dem: Terrain | None = None) -> tuple[np.ndarray, list[GeoWarning]]:
    """Ground (lon, lat) WGS84 degrees (N, 2) of ``pixels`` (N, 2) as (x, y), NaN where unknown.

    With a DEM and an altitude above sea level the rays are marched against the DEM; otherwise
    the ground is flat, ``alt_agl`` below the camera. With the heading unknown only the principal
    point has a position (the others would be guessed). Never raises."""
    px = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    nan = np.full((len(px), 2), np.nan)
    if pose.lat is None or pose.lon is None or pose.pitch is None:
        return nan, [GeoWarning("no_pose", "no position or camera angles for this frame")]
    warnings: list[GeoWarning] = []
    if dem is not None and pose.alt_msl is not None:
        h, terrain = pose.alt_msl, dem
    elif pose.alt_agl is not None:
        h = pose.alt_msl if pose.alt_msl is not None else pose.alt_agl
        terrain = FlatGround(h - pose.alt_agl)
        if dem is not None:
            warnings.append(GeoWarning("dem_unused", "no altitude above sea level: flat ground"))
    else:
        return nan, [GeoWarning("no_agl", "no height above ground for this frame")]
    dirs = ray_directions(intr, pose.yaw or 0.0, pose.pitch, pose.roll or 0.0, px)
    out, more = cast_rays(pose.lat, pose.lon, h, dirs, terrain)
    if pose.yaw is None:
        off_centre = (px[:, 0] != intr.cx) | (px[:, 1] != intr.cy)
        out[off_centre] = np.nan
        if off_centre.any():
            warnings.append(GeoWarning("heading_unknown", "heading unknown: only the principal "
                                       "point is placed"))
    return out, warnings + more


def tile_centres(width: int, height: int, tile_px: int) -> np.ndarray:
    """Centres (x, y) of the tiles of a frame, row by row; a partial last tile is centred on
    the part inside the frame."""
    xs = [(x + min(x + tile_px, width)) / 2 for x in range(0, width, tile_px)]
    ys = [(y + min(y + tile_px, height)) / 2 for y in range(0, height, tile_px)]
    gx, gy = np.meshgrid(np.array(xs, dtype=np.float64), np.array(ys, dtype=np.float64))
    return np.column_stack([gx.ravel(), gy.ravel()])


def frame_corners(width: int, height: int) -> np.ndarray:
    """The frame's corners (x, y): top-left, top-right, bottom-right, bottom-left."""
    return np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]])


def bench_us(n: int = 1000) -> float:
    """Microseconds per frame to place an 8x6 tile grid and the 4 corners on flat ground."""
    intr = Intrinsics(fx=3000.0, fy=3000.0, cx=2000.0, cy=1500.0, width=4000, height=3000,
                      source="bench")
    pose = FramePose(lat=47.0, lon=8.0, alt_msl=600.0, alt_agl=120.0, agl_source="bench",
                     yaw=30.0, pitch=-60.0, roll=2.0, pose_source="bench")
    pixels = np.vstack([tile_centres(4000, 3000, 500), frame_corners(4000, 3000)])
    ground_points(pose, intr, pixels)
    start = time.perf_counter()
    for _ in range(n):
        ground_points(pose, intr, pixels)
    us = (time.perf_counter() - start) / n * 1e6
    print(f"geometry: {us:.0f} us per frame ({len(pixels)} rays, flat ground)")
    return us
