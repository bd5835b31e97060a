"""The report with the pipeline's ground geometry (migration 4), the mosaic and the MBTiles basemap."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
import sqlite3

import cv2
import numpy as np
import pytest
from report_data import (
    GROUND_CENTRES,
    GROUND_FLIGHT,
    GROUND_LOOK_M,
    GROUND_YAWS,
    ground_corners_xy,
    ground_lonlat,
    ground_rows,
    write_mbtiles,
)

from agent.report.build import collect, write_report
from agent.report.html import build_payload
from agent.report.layers import mosaic
from agent.report.mbtiles import BasemapError, read_basemap, tile_bounds, tile_xy
from agent.store.db import Store


@pytest.fixture
def ground_db(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    store = Store(tmp_path / "skysift.db")
    store.add_frames(ground_rows(images))
    store.close()
    return tmp_path / "skysift.db"


def _collect(db, threshold):
    store = Store(db, readonly=True)
    try:
        return collect(store, threshold=threshold)
    finally:
        store.close()


def _signed_area(ring):
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:], strict=False)) / 2


def test_mbtiles_rows_are_tms_flipped(tmp_path):
    z, lon, lat = 16, 36.15, 36.21
    x, y = tile_xy(z, lon, lat)
    west, south, east, north = tile_bounds(z, x, y)
    assert west <= lon < east and south < lat <= north
    path = tmp_path / "flip.mbtiles"
    write_mbtiles(path, (lon, lat, lon, lat), range(z, z + 1), rgb=(0, 0, 255))
    # a decoy where a reader that forgot the flip would look: XYZ row y stored as-is
    conn = sqlite3.connect(path)
    decoy = cv2.imencode(".png", np.full((256, 256, 3), 255, np.uint8))[1].tobytes()
    conn.execute("INSERT INTO tiles VALUES (?, ?, ?, ?)", (z, x, y, decoy))
    conn.commit()
    conn.close()
    bm = read_basemap(path, (lon - 1e-4, lat - 1e-4, lon + 1e-4, lat + 1e-4))
    assert bm is not None and bm.zoom == z and len(bm.tiles) == 1
    t = bm.tiles[0]
    assert (t.x, t.y) == (x, y) and (t.west, t.south, t.east, t.north) == pytest.approx((west, south, east, north))
    img = cv2.imdecode(np.frombuffer(base64.b64decode(t.data_uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert t.data_uri.startswith("data:image/png;base64,") and img[0, 0].tolist() == [255, 0, 0]  # blue, not the decoy


def test_mbtiles_best_zoom_within_the_byte_budget(tmp_path):
    box = (36.149, 36.209, 36.151, 36.211)
    path = tmp_path / "zooms.mbtiles"
    write_mbtiles(path, box, range(12, 19), fmt="jpg")
    assert read_basemap(path, box).zoom == 18
    conn = sqlite3.connect(path)
    size = {z: n for z, n in conn.execute("SELECT zoom_level, sum(length(tile_data)) FROM tiles GROUP BY zoom_level")}
    conn.close()
    assert size[18] > size[16]
    bm = read_basemap(path, box, max_bytes=size[18] - 1)
    assert bm.zoom == 17 and bm.bytes == size[17] and bm.tiles[0].data_uri.startswith("data:image/jpeg")
    assert read_basemap(path, box, max_bytes=1) is None
    assert read_basemap(path, (10.0, 10.0, 10.01, 10.01)) is None  # the file covers somewhere else
    with pytest.raises(BasemapError, match="no file"):
        read_basemap(tmp_path / "nope.mbtiles", box)
    Store(tmp_path / "skysift.db").close()
    with pytest.raises(BasemapError, match="not an MBTiles file"):
        read_basemap(tmp_path / "skysift.db", box)


def test_stored_geometry_places_frames_and_tiles(ground_db):
    data = _collect(ground_db, 0.5)
    by_id = {f.row["frame_id"][:8]: f for f in data.frames}
    proj = data.projection
    for k, ((cx, cy), yaw) in enumerate(zip(GROUND_CENTRES, GROUND_YAWS, strict=True)):
        f = by_id[f"ground{k:02d}"]
        assert f.located and f.ground_problem is None and f.footprint.source == "pose"
        assert list(f.lonlat) == pytest.approx(ground_lonlat(cx, cy), abs=1e-9)  # the tiles, not the drone
        drone = proj.to_xy(f.row["lat"], f.row["lon"])
        assert math.dist(drone, f.xy) == pytest.approx(GROUND_LOOK_M, abs=0.05)
        corners = [proj.to_xy(lat, lon) for lon, lat in (ground_lonlat(*p) for p in ground_corners_xy(cx, cy, yaw))]
        assert np.ravel(f.footprint.image_quad).tolist() == pytest.approx(np.ravel(corners).tolist())  # TL, TR, BR, BL
        assert _signed_area(f.footprint.outline) > 0  # counter-clockwise on the ground
        assert f.footprint.ground_w == pytest.approx(60, abs=0.05) and f.footprint.ground_h == pytest.approx(45, abs=0.05)
        assert [(r, c) for r, c, _, _ in f.footprint.damaged_tiles] == [(0, 3), (1, 1)]
        # tile (1, 1) spans corners [1][1] .. [2][2]: from 1/4 to 1/2 across, 1/3 to 2/3 down
        tl = f.footprint.damaged_tiles[1][3][3]
        assert math.dist(tl, f.footprint.image_quad[0]) == pytest.approx(math.hypot(15, 15), abs=0.05)
    assert [(r, c) for r, c, _, _ in by_id["ground00"].footprint.damaged_tiles] == [(0, 3), (1, 1)]
    strict = {f.row["frame_id"][:8]: f for f in _collect(ground_db, 0.6).frames}
    assert [(r, c) for r, c, _, _ in strict["ground00"].footprint.damaged_tiles] == [(1, 1)]
    assert {k: by_id[k].ground_problem for k in ("nopose00", "missed00", "nopos000")} == {
        "nopose00": "no pose", "missed00": "ray missed", "nopos000": "no position"}
    assert by_id["nopose00"].located and not by_id["nopos000"].located


def test_geojson_and_csv_use_the_tile_positions(ground_db, tmp_path):
    files = write_report(ground_db, tmp_path / "out", threshold=0.6)
    gj = json.loads(files.geojson.read_text())
    points = {f["properties"]["frame_id"][:8]: f for f in gj["features"] if f["properties"]["kind"] == "frame"}
    assert points["ground01"]["geometry"]["coordinates"] == pytest.approx(ground_lonlat(*GROUND_CENTRES[1]), abs=1e-7)
    tiles = [f for f in gj["features"] if f["properties"]["kind"] == "damaged_tile"]
    assert len(tiles) == 3 and all(t["properties"]["p_damaged"] >= 0.6 for t in tiles)  # the card's threshold
    ground = [t for t in tiles if t["properties"]["frame_id"].startswith("ground")]
    for t in ground:
        ring = t["geometry"]["coordinates"][0]
        assert _signed_area(ring) > 0 and len(ring) == 5
        mid = np.mean(ring[:4], axis=0)
        assert [t["properties"]["lon"], t["properties"]["lat"]] == pytest.approx(mid.tolist(), abs=1e-7)
    fps = [f for f in gj["features"] if f["properties"]["kind"] == "footprint"]
    assert sorted(f["properties"]["footprint_source"] for f in fps) == ["pose"] * 3
    assert gj["skysift"]["tile_threshold"] == 0.6
    with files.csv.open() as fh:
        rows = {r["frame_id"][:8]: r for r in csv.DictReader(fh)}
    lon, lat = ground_lonlat(*GROUND_CENTRES[2])
    assert (float(rows["ground02"]["ground_lon"]), float(rows["ground02"]["ground_lat"])) == pytest.approx((lon, lat), abs=1e-7)
    assert (rows["nopose00"]["ground_problem"], rows["missed00"]["ground_problem"], rows["nopos000"]["ground_problem"]) == (
        "no pose", "ray missed", "no position")
    assert rows["nopose00"]["ground_lat"] == ""


def test_heat_weights_damaged_tiles_where_they_lie(ground_db):
    data = _collect(ground_db, 0.6)
    heat = build_payload(data)["heat"]
    frames = {f.row["frame_id"][:8]: f for f in data.located}
    tile = frames["ground00"].footprint.damaged_tiles[0][3]
    centre = (sum(p[0] for p in tile[:4]) / 4, sum(p[1] for p in tile[:4]) / 4)
    pts = list(zip(heat["x"], heat["y"], heat["w"], strict=True))
    assert len(pts) == 3 + 2  # one tile per ground frame; the no-pose and missed frames at their point
    assert any(math.dist((x, y), centre) < 0.05 and w == pytest.approx(1 / 12, abs=1e-4) for x, y, w in pts)
    nopose = frames["nopose00"].xy
    assert any(math.dist((x, y), nopose) < 0.05 and w == pytest.approx(1 / 4, abs=1e-4) for x, y, w in pts)
    assert len(build_payload(_collect(ground_db, 0.95))["heat"]["x"]) == 0


def test_mosaic_has_each_picture_with_its_ground_corners(ground_db, tmp_path):
    data = _collect(ground_db, 0.5)
    payload = build_payload(data, mosaic_px=128)
    m = payload["mosaic"]
    assert (len(m["frames"]), m["missing"], m["over_budget"], m["candidates"]) == (3, 0, 0, 3)
    for fr in m["frames"]:
        f = data.located[fr["i"]]
        assert fr["q"] == pytest.approx([v for p in f.footprint.image_quad for v in p], abs=0.01)
        head, b64 = fr["img"].split(",", 1)
        img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
        assert head == "data:image/jpeg;base64" and img.shape[:2] == (96, 128)
    small = mosaic(data.located, [], None, 64, max_bytes=1)
    assert (len(small["frames"]), small["over_budget"]) == (1, 2)


def test_basemap_payload_covers_the_flights(ground_db, tmp_path):
    data = _collect(ground_db, 0.5)
    assert build_payload(data)["basemap"] == {"tiles": [], "note": "no basemap (set report.basemap to an .mbtiles file)"}
    path = tmp_path / "base.mbtiles"
    write_mbtiles(path, (36.14, 36.20, 36.16, 36.22), range(15, 18))
    bm = build_payload(data, basemap_path=path)["basemap"]
    assert bm["zoom"] == 17 and bm["attribution"] == "test tiles"
    box = [min(t["b"][0] for t in bm["tiles"]), min(t["b"][1] for t in bm["tiles"]),
           max(t["b"][2] for t in bm["tiles"]), max(t["b"][3] for t in bm["tiles"])]
    for f in data.located:
        for x, y in f.footprint.outline if f.footprint else [f.xy]:
            assert box[0] < x < box[2] and box[1] < y < box[3]


def test_no_position_at_all_says_why(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    store = Store(tmp_path / "skysift.db")
    store.add_frames(ground_rows(images)[-1:])
    store.close()
    path = tmp_path / "base.mbtiles"
    write_mbtiles(path, (36.14, 36.20, 36.16, 36.22), range(15, 16))
    files = write_report(tmp_path / "skysift.db", tmp_path / "out", threshold=0.5, basemap=path)
    assert (files.frames, files.located) == (1, 0)
    html = files.html.read_text()
    payload = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    assert payload["unlocated"][0]["problem"] == "no position"
    assert payload["basemap"]["note"] == "basemap base.mbtiles not shown: no frame on the map to place it by"
    assert payload["mosaic"]["frames"] == [] and payload["heat"]["x"] == []
    assert "No frame can be placed on the map" in html


def test_frames_in_the_same_place_keep_the_flight_name(ground_db):
    assert {f.row["flight_id"] for f in _collect(ground_db, 0.5).frames} == {GROUND_FLIGHT}
