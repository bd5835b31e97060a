"""Terrain for ray casting: a GeoTIFF DEM read with rasterio, or flat ground (a constant DEM).

Heights are orthometric metres in the DEM's own vertical datum; the drone's altitudes above sea
level are taken to be in the same datum (see agent.imaging.xmp). Supported DEM CRSs: geographic
ones (degrees) and projected ones in metres; anything else (no CRS, feet, a local engineering
CRS) is refused with :class:`DemError` when the DEM is opened. rasterio is imported here only.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from agent.core.errors import SkysiftError


class DemError(SkysiftError):
    """A DEM file that cannot be used: unreadable, or in an unsupported CRS. ``reason`` is the
    warning code (``dem_unreadable``, ``dem_unsupported_crs``)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Terrain(Protocol):
    """What the ray caster needs of the ground."""

    step_m: float  # coarse marching step along a ray; inf where the ground has no relief

    def heights(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Ground heights (m) at WGS84 degrees; NaN where the terrain does not cover."""
        ...

    def bounds(self) -> tuple[float, float]:
        """The lowest and highest ground height (m) anywhere on this terrain."""
        ...


class FlatGround:
    """Level ground at one height: the special case of a constant DEM."""

    step_m = math.inf

    def __init__(self, elevation_m: float):
        self.elevation_m = float(elevation_m)

    def heights(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        return np.full(np.shape(lon), self.elevation_m)

    def bounds(self) -> tuple[float, float]:
        return self.elevation_m, self.elevation_m


class Dem:
    """A single-band GeoTIFF DEM, loaded into memory once and sampled bilinearly."""

    def __init__(self, path: str):
        try:
            import rasterio
            from rasterio.transform import Affine
        except ImportError as exc:  # pragma: no cover - rasterio is a dependency
            raise DemError("dem_unreadable", f"rasterio is not installed: {exc}") from exc
        try:
            with rasterio.open(path) as src:
                crs, transform, nodata = src.crs, src.transform, src.nodata
                band = src.read(1, masked=False).astype(np.float64)
        except Exception as exc:  # rasterio's errors for a corrupt or missing file
            raise DemError("dem_unreadable", f"cannot read DEM {path}: {exc}") from exc
        if crs is None:
            raise DemError("dem_unsupported_crs", f"DEM {path} has no CRS")
        if not crs.is_geographic and crs.linear_units_factor[1] != 1.0:
            unit = crs.linear_units_factor[0]
            raise DemError("dem_unsupported_crs", f"DEM {path}: CRS units are {unit}, not metres")
        if nodata is not None:
            band[band == nodata] = np.nan
        band[~np.isfinite(band)] = np.nan
        if np.isnan(band).all():
            raise DemError("dem_unreadable", f"DEM {path} holds no heights")
        self._band = band
        self._inverse: Affine = ~transform
        self._to_dem = None
        if not crs.is_geographic or crs.to_epsg() != 4326:
            from pyproj import Transformer

            self._to_dem = Transformer.from_crs("EPSG:4326", crs.to_wkt(), always_xy=True)
        # a coarse step of about one cell, so a ray cannot jump over a ridge of one cell
        cell = abs(transform.a)
        self.step_m = max(cell * 111_320.0 if crs.is_geographic else cell, 0.5)
        self._bounds = float(np.nanmin(band)), float(np.nanmax(band))

    def bounds(self) -> tuple[float, float]:
        return self._bounds

    def heights(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        x, y = (lon, lat) if self._to_dem is None else self._to_dem.transform(lon, lat)
        a, b, c, d, e, f = self._inverse.a, self._inverse.b, self._inverse.c, *self._inverse[3:6]
        col = a * x + b * y + c - 0.5  # pixel centres sit at half-integers
        row = d * x + e * y + f - 0.5
        rows, cols = self._band.shape
        c0, r0 = np.floor(col), np.floor(row)
        inside = (c0 >= 0) & (r0 >= 0) & (c0 < cols - 1) & (r0 < rows - 1)
        c0i = np.where(inside, c0, 0).astype(np.intp)
        r0i = np.where(inside, r0, 0).astype(np.intp)
        tc, tr = col - c0, row - r0
        z = self._band
        top = z[r0i, c0i] * (1 - tc) + z[r0i, c0i + 1] * tc
        bottom = z[r0i + 1, c0i] * (1 - tc) + z[r0i + 1, c0i + 1] * tc
        out = top * (1 - tr) + bottom * tr
        return np.where(inside, out, np.nan)

