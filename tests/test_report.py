"""`skysift report`: GeoJSON, CSV and the HTML file, from real SQLite files and real photos."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from report_data import GPS_FLIGHT, MOWER_FLIGHT, MOWER_HFOV, gps_photo_rows, lawnmower_rows

from agent.imaging.decode import read_exif
from agent.report.build import ReportError, collect, write_report
from agent.report.geo import LocalProjection, footprint, ground_size, valid_position
from agent.report.html import build_payload
from agent.store.db import Store

M_PER_DEG = 6_371_008.8 * math.pi / 180


def _dist_m(a: list[float], b: list[float]) -> tuple[float, float]:
    """(east, north) metres from lon/lat point a to b, locally."""
    lat = math.radians((a[1] + b[1]) / 2)
    return (b[0] - a[0]) * M_PER_DEG * math.cos(lat), (b[1] - a[1]) * M_PER_DEG


def _signed_area(ring: list[list[float]]) -> float:
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:], strict=False)) / 2


@pytest.fixture
def photos_db(tmp_path, exif_samples) -> Path:
    db = tmp_path / "data" / "skysift.db"
    store = Store(db)
    store.add_frames(gps_photo_rows(exif_samples))
    store.close()
    return db


@pytest.fixture(scope="module")
def survey_db(tmp_path_factory, exif_samples) -> Path:
    db = tmp_path_factory.mktemp("survey") / "skysift.db"
    store = Store(db)
    store.add_frames(gps_photo_rows(exif_samples))
    store.add_frames(lawnmower_rows(2500))
    store.close()
    return db


def _features(gj: dict, kind: str) -> list[dict]:
    return [f for f in gj["features"] if f["properties"]["kind"] == kind]


def test_geojson_points_are_the_photos_exif_positions(photos_db, tmp_path, exif_samples):
    files = write_report(photos_db, tmp_path / "out")
    gj = json.loads(files.geojson.read_text())
    frames = _features(gj, "frame")
    located = {f["properties"]["frame_id"]: f for f in frames if f["geometry"]}
    photos = sorted((exif_samples / "gps").glob("*.jpg"))
    assert len(located) == len(photos) == 9
    for path in photos:
        data = path.read_bytes()
        exif = read_exif(data)
        feat = located[hashlib.sha256(data).hexdigest()[:32]]
        assert feat["geometry"]["type"] == "Point"
        assert feat["geometry"]["coordinates"] == pytest.approx([exif.lon, exif.lat], abs=1e-7)  # lon first
        assert 43.4 < exif.lat < 43.5 and 11.8 < exif.lon < 11.9  # the EXIF really was read
        props = feat["properties"]
        assert props["captured_at"] == exif.captured_at and props["captured_at"].startswith("2008-10-22T")
        assert set(props) >= {"frame_id", "label", "p_damaged", "damaged_tiles", "captured_at"}
    # no altitude in these photos and no field of view: no footprint is invented
    assert _features(gj, "footprint") == [] and _features(gj, "damaged_tile") == []


def test_frames_without_position_are_kept_and_say_why(photos_db, tmp_path):
    files = write_report(photos_db, tmp_path / "out")
    assert (files.frames, files.located, files.unlocated) == (11, 9, 2)
    gj = json.loads(files.geojson.read_text())
    unlocated = [f for f in _features(gj, "frame") if f["geometry"] is None]
    assert sorted(f["properties"]["status"] for f in unlocated) == ["classified", "rejected"]
    assert all(f["properties"]["position_problem"] == "no position" for f in unlocated)
    assert gj["skysift"]["unlocated"] == 2
    with files.csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 11
    assert {r["frame_id"] for r in rows} == {f["properties"]["frame_id"] for f in _features(gj, "frame")}
    assert sum(r["position_problem"] == "no position" for r in rows) == 2
    rejected = next(r for r in rows if r["status"] == "rejected")
    assert rejected["reason"] == "corrupt" and rejected["label"] == ""
    html = files.html.read_text()
    payload = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1))
    assert len(payload["unlocated"]) == 2 and len(payload["points"]["x"]) == 9


@pytest.mark.parametrize(
    ("lat", "lon", "problem"),
    [(None, 11.0, "no position"), (43.0, None, "no position"), (float("nan"), 11.0, "invalid position"),
     (91.0, 11.0, "invalid position"), (0.0, 0.0, "position 0,0 (no GPS fix)"), (-33.9, 151.2, None)],
)
def test_valid_position(lat, lon, problem):
    assert valid_position(lat, lon) == problem


def test_footprint_of_a_nadir_frame_at_100m():
    # hfov 90 degrees at 100 m: 200 m across; 4:3 frame with only hfov: 150 m along (square pixels).
    assert ground_size(100, 800, 600, 90, None) == pytest.approx((200, 150))
    assert ground_size(100, 800, 600, None, 2 * math.degrees(math.atan(0.75))) == pytest.approx((200, 150))
    assert ground_size(None, 800, 600, 90, 60) is None and ground_size(100, 800, 600, None, None) is None
    assert ground_size(0, 800, 600, 90, 60) is None
    row = {"width": 800, "height": 600, "alt": 100.0, "tile_px": 200,
           "tile_grid": [[0.9, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]]}
    fp = footprint(row, (10.0, 20.0), 90, None, threshold=0.5)
    xs = [p[0] for p in fp.outline]
    ys = [p[1] for p in fp.outline]
    assert (min(xs), max(xs), min(ys), max(ys)) == pytest.approx((-90, 110, -55, 95))
    assert fp.outline[0] == fp.outline[-1]
    # tile (0, 0) is the image's top-left: the north-west corner of a north-up footprint
    (r0, c0, p0, ring0), (r1, c1, _, ring1) = fp.damaged_tiles
    assert (r0, c0, p0, r1, c1) == (0, 0, 0.9, 2, 3)
    assert min(p[0] for p in ring0) == pytest.approx(-90) and max(p[1] for p in ring0) == pytest.approx(95)
    assert max(p[0] for p in ring1) == pytest.approx(110) and min(p[1] for p in ring1) == pytest.approx(-55)


def test_footprint_heading_turns_the_image_top():
    row = {"width": 400, "height": 400, "alt": 50.0, "tile_px": 200, "tile_grid": [[0.9, 0.0], [0.0, 0.0]]}
    north_up = footprint(row, (0, 0), 90, 90, threshold=0.5).damaged_tiles[0][3]
    facing_east = footprint({**row, "heading": 90}, (0, 0), 90, 90, threshold=0.5).damaged_tiles[0][3]
    cx = lambda ring: sum(p[0] for p in ring[:4]) / 4  # noqa: E731
    cy = lambda ring: sum(p[1] for p in ring[:4]) / 4  # noqa: E731
    assert (cx(north_up), cy(north_up)) == pytest.approx((-25, 25))  # top-left: north-west
    assert (cx(facing_east), cy(facing_east)) == pytest.approx((25, 25))  # top-left: north-east


def test_tiles_follow_the_classifiers_edge_rule():
    # 300 px with 128 px tiles: starts 0, 128, 172 (the last tile is shifted inward to the edge).
    row = {"width": 300, "height": 128, "alt": 30.0, "tile_px": 128, "tile_grid": [[0.0, 0.0, 0.8]]}
    fp = footprint(row, (0, 0), 60, None, threshold=0.5)
    ring = fp.damaged_tiles[0][3]
    xs = [p[0] for p in ring]
    m_per_px = fp.ground_w / 300
    assert min(xs) == pytest.approx((172 - 150) * m_per_px) and max(xs) == pytest.approx(150 * m_per_px)


def test_survey_footprints_are_geojson_polygons_in_place(survey_db, tmp_path):
    files = write_report(survey_db, tmp_path / "out", [MOWER_FLIGHT], hfov_deg=MOWER_HFOV)
    gj = json.loads(files.geojson.read_text())
    points = {f["properties"]["frame_id"]: f for f in _features(gj, "frame") if f["geometry"]}
    fps = _features(gj, "footprint")
    tiles = _features(gj, "damaged_tile")
    assert len(points) == len(fps) == 2500 - 10  # every 250th frame lost its GPS
    expected_w = 2 * 80 * math.tan(math.radians(MOWER_HFOV / 2))
    for fp in fps[::97]:
        ring = fp["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) == 5
        assert _signed_area(ring) > 0  # counter-clockwise exterior ring (RFC 7946)
        centre = points[fp["properties"]["frame_id"]]["geometry"]["coordinates"]
        sw, se, ne = ring[0], ring[1], ring[2]
        # 1e-3: the local projection uses cos(lat) of the survey centre, 1 km away at most
        assert _dist_m(sw, se)[0] == pytest.approx(expected_w, rel=1e-3)
        assert _dist_m(se, ne)[1] == pytest.approx(expected_w * 384 / 512, rel=1e-3)
        mid = [(sw[0] + ne[0]) / 2, (sw[1] + ne[1]) / 2]
        assert _dist_m(centre, mid) == pytest.approx((0, 0), abs=0.01)
    total = sum(f["properties"]["damaged_tiles"] for f in points.values())
    assert len(tiles) == total > 100
    assert all(t["properties"]["p_damaged"] >= 0.5 for t in tiles)


def test_flights_chosen_by_id_or_name_and_unknown_ones_refused(survey_db):
    store = Store(survey_db, readonly=True)
    try:
        assert {f.row["flight_id"] for f in collect(store, [GPS_FLIGHT]).frames} == {GPS_FLIGHT}
        assert len(collect(store).frames) == 2511
        with pytest.raises(ReportError, match="unknown flight.*nope"):
            collect(store, ["nope"])
    finally:
        store.close()


def test_counts_per_flight(survey_db, tmp_path):
    store = Store(survey_db, readonly=True)
    data = collect(store, hfov_deg=MOWER_HFOV)
    store.close()
    counts = {c["flight_id"]: c for c in data.flight_counts()}
    mower = counts[MOWER_FLIGHT]
    assert (mower["frames"], mower["located"], mower["unlocated"], mower["rejected"]) == (2500, 2490, 10, 0)
    assert mower["damaged"] == sum(f.row["label"] == "damaged" for f in data.frames if f.row["flight_id"] == MOWER_FLIGHT) > 50
    assert (counts[GPS_FLIGHT]["frames"], counts[GPS_FLIGHT]["rejected"], counts[GPS_FLIGHT]["unlocated"]) == (11, 1, 2)


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_html_is_self_contained_with_thumbnails(photos_db, tmp_path):
    html = write_report(photos_db, tmp_path / "out", title="Photos </script><b>x").html.read_text()
    parser = _Tags()
    parser.feed(html)
    tags = parser.tags
    assert not [t for t in tags if t[0] in ("link", "iframe", "object", "embed", "base")]
    assert not [t for t in tags if t[1].get("src") or t[1].get("href")]  # nothing to fetch
    assert [t[1].get("type") for t in tags if t[0] == "script"] == [None, "application/json", None]
    assert "<b>x" not in html and "Photos &lt;/script&gt;&lt;b&gt;x" in html
    csp = next(t[1]["content"] for t in tags if t[0] == "meta" and t[1].get("http-equiv") == "Content-Security-Policy")
    assert csp.startswith("default-src 'none'")
    assert not re.search(r"https?://", html.replace("http://www.w3.org/2000/svg", ""))
    payload = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))
    top = payload["top"]
    assert len(top) == 6 and all(t["p"] >= 0.5 for t in top)
    for t in top:
        head, b64 = t["thumb"].split(",", 1)
        assert head == "data:image/jpeg;base64"
        img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
        assert max(img.shape[:2]) == (224 if t["lat"] is not None else 100)  # 640x480 scaled down; 100x68 kept
        # damaged tiles are outlined in red on the thumbnail
        assert ((img[..., 2] > 180) & (img[..., 0] < 90) & (img[..., 1] < 90)).sum() > 100


def test_thumbnail_missing_image_is_not_an_error(survey_db, tmp_path):
    store = Store(survey_db, readonly=True)
    data = collect(store, [MOWER_FLIGHT], MOWER_HFOV)
    store.close()
    payload = build_payload(data, top=5)
    assert len(payload["top"]) == 5 and all(t["thumb"] is None for t in payload["top"])  # images gone after sync
    # the most damaged first: all 12 tiles damaged
    assert [t["dt"] for t in payload["top"]] == [12] * 5
    assert payload["spacing_m"] == pytest.approx(30, abs=0.5)  # frames every 30 m along the passes


def test_report_reads_while_the_agent_writes_and_changes_nothing(photos_db, tmp_path):
    writer = Store(photos_db)  # the agent, running
    writer.add_frames(lawnmower_rows(2))  # committed to the WAL, not yet checkpointed
    wal = photos_db.with_name(photos_db.name + "-wal")
    before = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (photos_db, wal)]
    files = write_report(photos_db, tmp_path / "out")
    assert files.frames == 13  # the WAL's frames are seen
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in (photos_db, wal)] == before
    writer.close()
    with pytest.raises(ReportError, match="no skysift database"):
        write_report(tmp_path / "nowhere" / "skysift.db", tmp_path / "out2")


def test_empty_database_gives_an_empty_report(tmp_path):
    Store(tmp_path / "skysift.db").close()
    files = write_report(tmp_path / "skysift.db", tmp_path / "out")
    assert files.frames == 0
    assert json.loads(files.geojson.read_text())["features"] == []
    assert files.csv.read_text().startswith("frame_id,flight_id,status")
    assert "Damage map: no flights" in files.html.read_text()


def test_cli_writes_the_three_files(photos_db, tmp_path):
    cfg = tmp_path / "skysift.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"dir": str(photos_db.parent)}, "camera": {"hfov_deg": 60.0}}))
    out = tmp_path / "maps"
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "-c", str(cfg), "report", GPS_FLIGHT, "--out", str(out), "--top", "3"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "11 frames: 9 on the map, 2 without position" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["damage-map.html", "damage.kml", "frames.csv", "frames.geojson"]
    assert str(out / "damage-map.html") in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "agent", "-c", str(cfg), "report", "no-such-flight", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 1 and "unknown flight(s): no-such-flight" in bad.stderr


def test_projection_round_trip():
    proj = LocalProjection.around([(36.2, 36.1), (36.3, 36.2)])
    x, y = proj.to_xy(36.3, 36.2)
    assert (x, y) == pytest.approx((0.05 * M_PER_DEG * math.cos(math.radians(36.25)), 0.05 * M_PER_DEG))
    assert proj.to_lonlat(x, y) == pytest.approx((36.2, 36.3))
