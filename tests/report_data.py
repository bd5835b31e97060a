"""Frame rows for report tests, shaped like the agent's output, from the real shared data.

- :func:`gps_photo_rows`: the geotagged camera JPEGs (their real EXIF GPS positions and times),
  plus a camera JPEG without GPS and the corrupted JPEG (rejected): both must be listed as
  frames without position.
- :func:`lawnmower_rows`: a synthetic survey flight of a few thousand frames along a lawn-mower
  path over two damaged zones, with GPS dropouts. Damaged frames get real image files: mosaics of
  the shared aerial tiles, damaged tiles where the grid says damaged.
"""

from __future__ import annotations

import hashlib
import math
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np

from agent.imaging.decode import read_exif
from agent.report.geo import tile_threshold

GPS_FLIGHT = "photos-2008-10-22"
MOWER_FLIGHT = "survey-antakya"
# Centre of the synthetic survey (Antakya, the 2023 Kahramanmaras earthquake).
MOWER_LAT, MOWER_LON = 36.2025, 36.1606
MOWER_ALT = 80.0
MOWER_HFOV = 70.0
MOWER_W, MOWER_H, MOWER_TILE = 512, 384, 128  # 4 x 3 tiles of 128 px
# Damaged zones as (east m, north m, radius m) from the survey centre.
ZONES = [(-500.0, 300.0, 260.0), (600.0, -450.0, 180.0)]
M_PER_DEG = 6_371_008.8 * math.pi / 180


def _fid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _grid(seed: str, rows: int, cols: int, damaged: set[tuple[int, int]]) -> list[list[float]]:
    rng = random.Random(seed)
    return [
        [round(rng.uniform(0.6, 0.99), 3) if (r, c) in damaged else round(rng.uniform(0.01, 0.3), 3) for c in range(cols)]
        for r in range(rows)
    ]


def _row(frame_id: str, flight: str, grid: list[list[float]], **kw) -> dict:
    flat = [p for r in grid for p in r]
    dt = sum(p > tile_threshold() for p in flat)  # as the classifier counts them: the card's cut
    return {
        "frame_id": frame_id,
        "flight_id": flight,
        "source": "folder",
        "status": "classified",
        "label": "damaged" if dt else "undamaged",
        "p_damaged": max(flat),
        "tiles": len(flat),
        "damaged_tiles": dt,
        "tile_grid": grid,
        "engine": "openvino",
        "device": "CPU",
        "precision": "f32",
        **kw,
    }


def gps_photo_rows(exif_samples: Path) -> list[dict]:
    """The nine geotagged photos (classified), one photo without GPS, one corrupted (rejected)."""
    rows = []
    photos = sorted((exif_samples / "gps").glob("*.jpg"))
    for i, path in enumerate(photos):
        data = path.read_bytes()
        exif = read_exif(data)
        # 640x480 at 128 px tiles: 4 rows x 5 columns. Every other photo shows damage.
        damaged = {(1, 1), (1, 2), (2, 2)} if i % 2 == 0 else set()
        grid = _grid(path.name, 4, 5, damaged)
        rows.append(
            _row(
                _fid(data), GPS_FLIGHT, grid, image_path=str(path), sha256=hashlib.sha256(data).hexdigest(),
                bytes=len(data), tile_px=128, width=640, height=480, lat=exif.lat, lon=exif.lon, alt=exif.alt,
                geo_source="exif", captured_at=exif.captured_at,
            )
        )
    nogps = exif_samples / "Canon_40D.jpg"  # a small camera JPEG (100 x 68): one tile
    data = nogps.read_bytes()
    h, w = cv2.imread(str(nogps)).shape[:2]
    rows.append(
        _row(
            _fid(data), GPS_FLIGHT, [[0.93]], image_path=str(nogps), tile_px=128, width=w, height=h,
            lat=None, lon=None, geo_source="none", captured_at=read_exif(data).captured_at,
        )
    )
    bad = exif_samples / "corrupted.jpg"
    data = bad.read_bytes()
    rows.append(
        {
            "frame_id": _fid(data), "flight_id": GPS_FLIGHT, "source": "folder", "status": "rejected",
            "reason": "corrupt", "image_path": str(bad), "geo_source": "none",
        }
    )
    return rows


def _mosaic(aerial_tiles: dict[str, list[Path]], grid: list[list[float]], seed: int) -> np.ndarray:
    rng = random.Random(seed)
    rows = []
    for cells in grid:
        tiles = []
        for p in cells:
            src = rng.choice(aerial_tiles["damaged" if p >= 0.5 else "undamaged"])
            tiles.append(cv2.imread(str(src), cv2.IMREAD_GRAYSCALE))
        rows.append(np.hstack(tiles))
    return np.vstack(rows)


def lawnmower_rows(
    n: int, aerial_tiles: dict[str, list[Path]] | None = None, image_dir: Path | None = None,
    dropout_every: int = 250,
) -> list[dict]:
    """``n`` frames along east-west passes 80 m apart, a frame every 30 m, 1 s apart.

    Every ``dropout_every``-th frame has no position (GPS dropout). With ``aerial_tiles`` and
    ``image_dir``, each damaged frame gets a real JPEG mosaic in ``image_dir``.
    """
    ground_w = 2 * MOWER_ALT * math.tan(math.radians(MOWER_HFOV / 2))
    ground_h = ground_w * MOWER_H / MOWER_W
    per_pass = 100
    spacing_x, spacing_y = 30.0, 80.0
    passes = math.ceil(n / per_pass)
    x0 = -(per_pass - 1) * spacing_x / 2
    y0 = (passes - 1) * spacing_y / 2
    start = datetime(2026, 2, 6, 10, 0, 0, tzinfo=timezone.utc)
    kx = M_PER_DEG * math.cos(math.radians(MOWER_LAT))
    rng = random.Random(7)
    cols, nrows = MOWER_W // MOWER_TILE, MOWER_H // MOWER_TILE
    rows = []
    for k in range(n):
        p, j = divmod(k, per_pass)
        if p % 2:
            j = per_pass - 1 - j  # lawn-mower: every other pass flies back west
        x, y = x0 + j * spacing_x, y0 - p * spacing_y
        damaged = set()
        for r in range(nrows):
            for c in range(cols):
                tx = x + ((c + 0.5) / cols - 0.5) * ground_w
                ty = y + (0.5 - (r + 0.5) / nrows) * ground_h
                if any(math.hypot(tx - zx, ty - zy) < zr for zx, zy, zr in ZONES) or rng.random() < 0.002:
                    damaged.add((r, c))
        grid = _grid(f"mower{k}", nrows, cols, damaged)
        fid = hashlib.sha256(f"{MOWER_FLIGHT}/{k}".encode()).hexdigest()[:32]
        lost = dropout_every and k % dropout_every == dropout_every - 1
        path = f"inbox/{MOWER_FLIGHT}/IMG_{k:05d}.jpg"  # not on this device: deleted after sync
        if damaged and aerial_tiles is not None and image_dir is not None:
            img_path = image_dir / f"IMG_{k:05d}.jpg"
            cv2.imwrite(str(img_path), _mosaic(aerial_tiles, grid, k), [cv2.IMWRITE_JPEG_QUALITY, 80])
            path = str(img_path)
        rows.append(
            _row(
                fid, MOWER_FLIGHT, grid, image_path=path, tile_px=MOWER_TILE, width=MOWER_W, height=MOWER_H,
                lat=None if lost else MOWER_LAT + y / M_PER_DEG,
                lon=None if lost else MOWER_LON + x / kx,
                alt=None if lost else MOWER_ALT,
                geo_source="none" if lost else "telemetry",
                captured_at=(start + timedelta(seconds=k)).isoformat().replace("+00:00", "Z"),
                classified_at=(start + timedelta(seconds=k, milliseconds=400)).isoformat().replace("+00:00", "Z"),
            )
        )
    return rows


def survey_latlon(x: float, y: float) -> tuple[float, float]:
    """Latitude/longitude of a point ``x`` m east and ``y`` m north of the survey centre."""
    return MOWER_LAT + y / M_PER_DEG, MOWER_LON + x / (M_PER_DEG * math.cos(math.radians(MOWER_LAT)))


# Frames the pipeline placed on the ground (migration 4 columns): an oblique camera looking
# north of the drone, so the tiles lie ~50 m from the drone's own position.
GROUND_FLIGHT = "oblique-ground"
GROUND_LAT, GROUND_LON = 36.2100, 36.1500
GROUND_W, GROUND_H, GROUND_TILE = 640, 480, 160  # 4 x 3 tiles
GROUND_SIZE_M = (60.0, 45.0)  # footprint across and along
GROUND_LOOK_M = 50.0  # footprint centre north of the drone
#: one solid picture colour per placed frame (RGB), none of them red like the tile outlines
GROUND_COLOURS = [(40, 200, 230), (240, 220, 30), (60, 170, 60)]
GROUND_CENTRES = [(-70.0, 0.0), (0.0, 10.0), (70.0, 0.0)]  # footprint centres, m east/north
GROUND_YAWS = [0.0, 30.0, 0.0]


def ground_lonlat(x: float, y: float) -> list[float]:
    """[lon, lat] of a point ``x`` m east and ``y`` m north of the ground flight's centre."""
    return [GROUND_LON + x / (M_PER_DEG * math.cos(math.radians(GROUND_LAT))), GROUND_LAT + y / M_PER_DEG]


def ground_corners_xy(cx: float, cy: float, yaw: float) -> list[tuple[float, float]]:
    """Footprint corners TL, TR, BR, BL (local metres) of a frame whose top faces ``yaw``."""
    w, h = GROUND_SIZE_M
    a = math.radians(yaw)
    out = []
    for u, v in ((-w / 2, h / 2), (w / 2, h / 2), (w / 2, -h / 2), (-w / 2, -h / 2)):
        out.append((cx + u * math.cos(a) + v * math.sin(a), cy - u * math.sin(a) + v * math.cos(a)))
    return out


def _bilinear(c: list[tuple[float, float]], s: float, t: float) -> tuple[float, float]:
    # s across (0 left, 1 right), t down (0 top, 1 bottom), over corners TL, TR, BR, BL
    top = [c[0][k] + (c[1][k] - c[0][k]) * s for k in (0, 1)]
    bottom = [c[3][k] + (c[2][k] - c[3][k]) * s for k in (0, 1)]
    return top[0] + (bottom[0] - top[0]) * t, top[1] + (bottom[1] - top[1]) * t


def ground_rows(image_dir: Path) -> list[dict]:
    """Three frames with the pipeline's footprint, tile centres and corners and a solid-colour
    image each; then one each with no pose, a ray that missed, and no position."""
    cols, nrows = GROUND_W // GROUND_TILE, GROUND_H // GROUND_TILE
    rows = []
    for k, ((cx, cy), yaw, rgb) in enumerate(zip(GROUND_CENTRES, GROUND_YAWS, GROUND_COLOURS, strict=True)):
        img = np.zeros((GROUND_H, GROUND_W, 3), np.uint8)
        img[:] = rgb[::-1]  # OpenCV is BGR
        path = image_dir / f"ground_{k}.png"  # PNG: the colour survives exactly until the page's JPEG
        cv2.imwrite(str(path), img)
        corners = ground_corners_xy(cx, cy, yaw)
        grid = [[0.1] * cols for _ in range(nrows)]
        grid[1][1] = 0.9  # damaged at any threshold
        grid[0][3] = 0.55  # damaged at 0.5, not at 0.6
        centres = [[list(ground_lonlat(*_bilinear(corners, (c + 0.5) / cols, (r + 0.5) / nrows))) for c in range(cols)]
                   for r in range(nrows)]
        tile_corners = [[ground_lonlat(*_bilinear(corners, c / cols, r / nrows)) for c in range(cols + 1)]
                        for r in range(nrows + 1)]
        ring = [ground_lonlat(*p) for p in corners]
        lon, lat = ground_lonlat(cx, cy - GROUND_LOOK_M)
        rows.append(
            _row(
                f"ground{k:02d}" + "0" * 24, GROUND_FLIGHT, grid, image_path=str(path), tile_px=GROUND_TILE,
                width=GROUND_W, height=GROUND_H, lat=lat, lon=lon, alt=120.0, alt_agl=40.0, geo_source="exif",
                yaw=yaw, pitch=-45.0, roll=0.0, pose_source="gimbal",
                footprint={"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
                tile_centers=centres, tile_corners=tile_corners,
                captured_at=f"2026-02-07T09:00:0{k}Z",
            )
        )
    lon, lat = ground_lonlat(0.0, -120.0)
    for name, kw in (
        ("nopose", {"lat": lat, "lon": lon, "pose_source": "none"}),
        ("missed", {"lat": lat, "lon": lon, "alt_agl": 40.0, "yaw": 0.0, "pitch": 10.0, "pose_source": "gimbal"}),
        ("nopos", {"lat": None, "lon": None}),
    ):
        rows.append(
            _row((name + "0" * 32)[:32], GROUND_FLIGHT, [[0.8, 0.1], [0.1, 0.1]], tile_px=GROUND_TILE, width=320,
                 height=320, geo_source="exif", captured_at="2026-02-07T09:01:00Z", **kw)
        )
    return rows


def write_mbtiles(path: Path, lonlat_box: tuple[float, float, float, float], zooms: range,
                  rgb: tuple[int, int, int] = (200, 90, 200), fmt: str = "png") -> None:
    """A raster MBTiles file of solid-colour tiles covering ``lonlat_box`` (west, south, east,
    north) at each zoom, rows stored TMS-flipped as the spec says."""
    import sqlite3

    from agent.report.mbtiles import tile_xy

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
    conn.execute("CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB)")
    conn.executemany("INSERT INTO metadata VALUES (?, ?)",
                     [("name", "test"), ("format", fmt), ("attribution", "test tiles")])
    tile = np.zeros((256, 256, 3), np.uint8)
    tile[:] = rgb[::-1]
    data = cv2.imencode("." + fmt, tile)[1].tobytes()
    west, south, east, north = lonlat_box
    for z in zooms:
        x0, y0 = tile_xy(z, west, north)
        x1, y1 = tile_xy(z, east, south)
        conn.executemany(
            "INSERT INTO tiles VALUES (?, ?, ?, ?)",
            [(z, x, 2**z - 1 - y, data) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)],
        )
    conn.commit()
    conn.close()
