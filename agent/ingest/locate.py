"""The locator stage: where on the ground one frame and each of its tiles lie.

It runs in the decode step, on the decode workers, while the file bytes are still in memory:
the XMP packet and the camera's EXIF are read from them, and with the rays it costs about
1.3 ms a 12 MP frame (48 tiles, 115 rays; ``skysift bench`` reports it as the ``locate``
stage), too much for the single commit thread. The row builder only copies :class:`Location` into the row.

Per frame: the position (EXIF GPS, else XMP, else the track or telemetry, see
:func:`agent.imaging.geotag`), the pose (:func:`agent.imaging.frame_pose`: height above ground
and camera angles, each with the rule that gave it), the camera (:func:`agent.imaging.intrinsics`,
config overrides per EXIF camera model), then one batch of rays: the frame's four corners, the
tile centres and the tile grid's corners. Tiles partition the frame (``0, tile_px, 2 tile_px ..
width``), so the grid of corners is regular; the model's last, partial tile is shifted inward
(models.frame.tile_starts) and its centre here is that of the part it does not share.

Nothing here raises on bad input: an unusable value is None and its reason is in
``job.warnings`` (GeoWarning.as_dict()), so a frame is always classified and stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.core.config import CameraConfig, CameraModelConfig, Config
from agent.imaging import (
    CameraOverrides,
    Dem,
    DemError,
    ExifInfo,
    FramePose,
    GeoWarning,
    PoseConfig,
    PositionSource,
    Telemetry,
    Terrain,
    XmpInfo,
    frame_corners,
    frame_pose,
    geotag,
    ground_points,
    intrinsics,
    read_camera_exif,
    read_xmp,
    telemetry_at,
    tile_centres,
)
from agent.ingest.job import Job
from agent.ingest.rows import captured_at

log = logging.getLogger(__name__)

#: degrees kept in stored coordinates: 1e-7 degrees is about 1 cm on the ground
COORD_DIGITS = 7


@dataclass
class Location:
    """Where one frame is: its position for the row, its pose and its ground geometry."""

    lat: float | None
    lon: float | None
    alt: float | None  # as read from the file (or the track), whatever gave alt_agl
    geo_source: str
    pose: FramePose
    footprint: dict[str, Any] | None = None  # GeoJSON Polygon of the corners, [lon, lat]
    tile_centers: list[list[list[float] | None]] | None = None  # rows x cols
    tile_corners: list[list[list[float] | None]] | None = None  # (rows+1) x (cols+1)


def _merge(base: CameraModelConfig, over: CameraModelConfig | None) -> CameraOverrides:
    def pick(key: str) -> float | None:
        value = getattr(over, key) if over is not None else None
        return value if value is not None else getattr(base, key)

    return CameraOverrides(hfov_deg=pick("hfov_deg"), focal_mm=pick("focal_mm"),
                           sensor_width_mm=pick("sensor_width_mm"))


def tile_edges(length: int, tile_px: int) -> list[float]:
    """The tile boundaries along one axis: 0, tile_px, 2 tile_px, ..., length."""
    return [float(x) for x in range(0, length, tile_px)] + [float(length)]


def _lonlats(points: np.ndarray) -> list[list[float] | None]:
    """[lon, lat] rounded per point, None where the ray found no ground (one numpy pass: a
    Python loop over the points cost more than the rays)."""
    placed = np.isfinite(points).all(axis=1).tolist()
    coords = np.round(points, COORD_DIGITS).tolist()
    return [c if ok else None for c, ok in zip(coords, placed, strict=True)]


def _grid(points: np.ndarray, rows: int, cols: int) -> list[list[list[float] | None]] | None:
    flat = _lonlats(points)
    if all(v is None for v in flat):
        return None
    return [flat[r * cols : (r + 1) * cols] for r in range(rows)]


def _footprint(corners: np.ndarray) -> dict[str, Any] | None:
    ring = _lonlats(corners)
    if any(p is None for p in ring):
        return None  # a partial polygon would claim ground the frame may not show
    return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


#: warnings that only say a frame without any position has no pose either
ABSENT = frozenset({"no_position", "no_agl", "heading_unknown", "no_intrinsics", "no_pose", "dem_unused"})


class Locator:
    """Locates frames for one configuration; the DEM is loaded once, when this is built."""

    def __init__(
        self,
        cfg: Config,
        positions: Callable[[], list[PositionSource]] = list,
    ):
        self.tile_px = cfg.model.tile_px
        self.clock_offset_s = cfg.geotag.clock_offset_s
        self.camera: CameraConfig = cfg.camera
        self.pose_cfg = PoseConfig(ground_elevation_m=cfg.geotag.ground_elevation_m)
        self.positions = positions
        self.dem: Terrain | None = None
        self.dem_warning: GeoWarning | None = None
        if cfg.geotag.dem is not None:
            try:
                self.dem = Dem(str(cfg.geotag.dem))
            except DemError as exc:
                # one warning at start; each frame then says why it has no DEM height
                log.warning("geotag.dem unusable, heights come from the other rules: %s", exc)
                self.dem_warning = GeoWarning("dem_unavailable", f"{exc.reason}: {exc}")

    def overrides(self, model: str | None) -> CameraOverrides:
        """The config's camera settings for an EXIF camera model (its own over the defaults)."""
        return _merge(self.camera, self.camera.models.get(model) if model else None)

    def locate(self, job: Job, data: bytes) -> None:
        """Set ``job.location`` and append the geometry warnings; ``data`` is the file."""
        img = job.image
        exif = img.exif if img is not None else None
        when = captured_at(job, self.clock_offset_s)
        xmp = read_xmp(data)
        sources = self.positions()
        lat, lon, alt, geo_source = geotag(exif, when, sources, xmp)
        tel = telemetry_at(when, sources)
        telemetry = Telemetry(agl=tel.agl, heading=tel.heading) if tel else None
        placed = ExifInfo(lat=lat, lon=lon, alt=alt)  # the position whichever source gave it
        pose = frame_pose(placed, xmp, telemetry, self.pose_cfg, self.dem)
        loc = Location(lat, lon, alt, geo_source, pose)
        if lat is None or lon is None:
            # Nothing to place (a bare tile, a scan): the null fields say so. Only what is wrong
            # with the file is a warning, not what it never claimed to have.
            warnings = [w for w in pose.warnings if w.reason not in ABSENT]
        else:
            warnings = list(pose.warnings)
            if self.dem_warning is not None:
                warnings.append(self.dem_warning)
            if img is not None:
                warnings += self._ground(loc, data, img.width, img.height, xmp)
        job.location = loc
        seen = {w["reason"] for w in job.warnings}
        for w in warnings:  # one per reason: the pose and the rays may both miss the same thing
            if w.reason not in seen:
                seen.add(w.reason)
                job.warnings.append(w.as_dict())

    def _ground(
        self, loc: Location, data: bytes, width: int, height: int, xmp: XmpInfo
    ) -> list[GeoWarning]:
        cam = read_camera_exif(data)
        intr, warnings = intrinsics(cam, width, height, self.overrides(cam.model), xmp)
        if intr is None:
            return warnings
        xs, ys = tile_edges(width, self.tile_px), tile_edges(height, self.tile_px)
        gx, gy = np.meshgrid(np.array(xs), np.array(ys))
        edges = np.column_stack([gx.ravel(), gy.ravel()])
        centres = tile_centres(width, height, self.tile_px)
        pixels = np.vstack([frame_corners(width, height), centres, edges])
        # with a DEM the rays are cast onto it; else onto flat ground alt_agl below the camera
        points, more = ground_points(loc.pose, intr, pixels, self.dem)
        rows, cols = len(ys) - 1, len(xs) - 1
        loc.footprint = _footprint(points[:4])
        loc.tile_centers = _grid(points[4 : 4 + rows * cols], rows, cols)
        loc.tile_corners = _grid(points[4 + rows * cols :], rows + 1, cols + 1)
        return warnings + more

