"""`skysift report`'s damage.kml / damage.kmz, read back by real consumers: GDAL/OGR (its LIBKML
and KML drivers, through pyogrio), fastkml, and the OGC KML 2.2 schema (lxml)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from report_data import GPS_FLIGHT, GROUND_FLIGHT, gps_photo_rows, ground_rows

from agent.cli.main import main
from agent.report.build import write_report
from agent.report.kml import DAMAGED_RGB, RAMP, style_key
from agent.store.db import Store

fastkml = pytest.importorskip("fastkml")
THRESHOLD = 0.5
KML_NS = "{http://www.opengis.net/kml/2.2}"

# Run in a child: GDAL_SKIP only applies when GDAL registers its drivers, at pyogrio's import.
GDAL_READ = r"""
import json, struct, sys
import pyogrio
out = {}
for name, _ in pyogrio.list_layers(sys.argv[1]):
    info = pyogrio.read_info(sys.argv[1], layer=name)
    _, _, geoms, fields = pyogrio.raw.read(sys.argv[1], layer=name)
    names = fields[list(info["fields"]).index("Name")]
    feats = []
    for n, wkb in zip(names, geoms):
        order = "<" if wkb[0] == 1 else ">"
        kind = struct.unpack(order + "I", wkb[1:5])[0] & 0xFFFF  # ISO (1001) or 2.5D flag (0x8...)
        point = list(struct.unpack(order + "2d", wkb[5:21])) if kind % 1000 == 1 else None
        feats.append([str(n), kind % 1000, point])
    out[str(name)] = {"driver": info["driver"], "features": feats}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def rows(tmp_path_factory, exif_samples):
    images = tmp_path_factory.mktemp("ground-images")
    return {GROUND_FLIGHT: ground_rows(images), GPS_FLIGHT: gps_photo_rows(exif_samples)}


@pytest.fixture(scope="module")
def report(tmp_path_factory, rows):
    """The same report written twice: with damage.kml and with damage.kmz."""
    base = tmp_path_factory.mktemp("kml")
    store = Store(base / "skysift.db")
    for r in rows.values():
        store.add_frames(r)
    store.close()
    kml = write_report(base / "skysift.db", base / "kml", hfov_deg=60.0, threshold=THRESHOLD)
    kmz = write_report(base / "skysift.db", base / "kmz", hfov_deg=60.0, threshold=THRESHOLD, kmz=True)
    return kml, kmz


def _expected(geojson: Path) -> dict[str, list[dict]]:
    """Per flight, the features a KML must hold: every GeoJSON feature that has a geometry."""
    out: dict[str, list[dict]] = {}
    for feat in json.loads(geojson.read_text())["features"]:
        if feat["geometry"] is not None:
            out.setdefault(feat["properties"]["flight_id"], []).append(feat)
    return out


def _gdal(path: str, skip_libkml: bool) -> dict:
    env = {"GDAL_SKIP": "LIBKML"} if skip_libkml else {}
    proc = subprocess.run([sys.executable, "-c", GDAL_READ, path], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("driver", ["LIBKML", "KML"])
def test_gdal_reads_a_layer_per_flight_with_every_feature(report, driver):
    files, kmz = report
    expected = _expected(files.geojson)
    paths = [str(files.kml), f"/vsizip/{kmz.kml}/doc.kml"] + ([str(kmz.kml)] if driver == "LIBKML" else [])
    for path in paths:
        layers = _gdal(path, skip_libkml=driver == "KML")
        assert sorted(layers) == sorted([GPS_FLIGHT, GROUND_FLIGHT]), path
        for flight, layer in layers.items():
            assert layer["driver"] == driver
            feats = layer["features"]
            kinds = [f["properties"]["kind"] for f in expected[flight]]
            # frames + footprints + damaged tiles, each once
            assert len(feats) == len(kinds) > 0
            assert [t for _, t, _ in feats] == [1 if k == "frame" else 3 for k in kinds]  # Point, Polygon
            points = [f["geometry"]["coordinates"] for f in expected[flight] if f["properties"]["kind"] == "frame"]
            got = [p for _, t, p in feats if t == 1]
            assert np.allclose(got, points, atol=1e-7, rtol=0)
    # the frames without position (2 photos, 1 ground frame) are no features
    assert files.located == 14 and files.unlocated == 3
    assert sum(len(v) for v in expected.values()) == len(layers[GPS_FLIGHT]["features"]) + len(
        layers[GROUND_FLIGHT]["features"]
    )


def _placemarks(path: Path):
    doc = fastkml.KML.parse(path).features[0]
    return doc, {folder.name: list(folder.features) for folder in doc.features}


def _ring(pm) -> list[tuple[float, float]]:
    return [c[:2] for c in pm.geometry.exterior.coords]


def _signed_area(ring):
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:], strict=False)) / 2


def _same_ring(got: list[tuple[float, float]], quad: list[list[float]]) -> bool:
    """``got`` is closed and visits the four corners of ``quad`` (within 1e-7), in any rotation."""
    if got[0] != got[-1] or len(got) != 5:
        return False
    return all(any(np.allclose(g, q, atol=1e-7, rtol=0) for q in quad) for g in got) and all(
        any(np.allclose(g, q, atol=1e-7, rtol=0) for g in got) for q in quad
    )


def test_fastkml_reads_folders_names_coordinates_and_styles(report, rows):
    doc, folders = _placemarks(report[0].kml)
    assert list(folders) == [GPS_FLIGHT, GROUND_FLIGHT] or list(folders) == [GROUND_FLIGHT, GPS_FLIGHT]
    styles = {s.id: s for s in doc.styles}
    by_name = {pm.name: pm for pms in folders.values() for pm in pms}
    for pms in folders.values():
        for pm in pms:
            assert pm.style_url.url.removeprefix("#") in styles
            assert pm.kml_geometry.altitude_mode.value == "clampToGround"
    # the pipeline's ground frames: point = mean of the tile centres, rings = the stored ones
    for row in rows[GROUND_FLIGHT][:3]:
        name = Path(row["image_path"]).name
        centres = [ll for cells in row["tile_centers"] for ll in cells]
        pt = by_name[name].geometry
        assert np.allclose([pt.x, pt.y], np.mean(centres, axis=0), atol=1e-7, rtol=0)
        assert by_name[name].style_url.url == "#frame-damaged"
        fp = _ring(by_name[f"{name} footprint"])
        assert _same_ring(fp, row["footprint"]["coordinates"][0][:4]) and _signed_area(fp) > 0
        corners = row["tile_corners"]
        for r, c in ((1, 1), (0, 3)):  # 0.9 and 0.55: both damaged from 0.5
            tile = by_name[f"{name} tile {r},{c}"]
            quad = [corners[r][c], corners[r][c + 1], corners[r + 1][c + 1], corners[r + 1][c]]
            assert _same_ring(_ring(tile), quad) and _signed_area(_ring(tile)) > 0
            assert tile.style_url.url == "#tile-damaged"
        assert not any(n.startswith(f"{name} tile 0,0") for n in by_name)  # 0.1: not damaged
    # the photos: points at their EXIF positions, styled by their p_damaged
    for row in rows[GPS_FLIGHT]:
        pm = by_name.get(Path(row["image_path"]).name)
        if row.get("lat") is None:
            assert pm is None  # no position: no placemark
            continue
        assert np.allclose([pm.geometry.x, pm.geometry.y], [row["lon"], row["lat"]], atol=1e-7, rtol=0)
        key = style_key(row["p_damaged"], THRESHOLD)
        assert pm.style_url.url == f"#frame-{key}"
        rgb = DAMAGED_RGB if key == "damaged" else RAMP[int(key.removeprefix("ramp"))]
        # KML colours are aabbggrr
        assert styles[f"frame-{key}"].styles[0].color == "ff" + "".join(f"{v:02x}" for v in rgb[::-1])
    assert "3 without position" in doc.description


def test_style_ramp_follows_p_damaged_and_the_threshold():
    keys = [style_key(p, 0.6) for p in (0.0, 0.13, 0.25, 0.37, 0.49, 0.59)]
    assert keys == ["ramp0", "ramp1", "ramp2", "ramp3", "ramp4", "ramp4"]
    assert style_key(0.6, 0.6) == style_key(0.99, 0.6) == "damaged"
    assert style_key(0.55, 0.5) == "damaged" and style_key(0.55, 0.6) == "ramp4"
    assert style_key(None, 0.5) == "unscored"


def test_kml_and_kmz_validate_against_the_ogc_schema(report):
    etree = pytest.importorskip("lxml.etree")
    xsd = Path(fastkml.__file__).parent / "schema" / "ogckml22.xsd"
    if not xsd.is_file():
        pytest.skip("this fastkml ships no ogckml22.xsd")
    schema = etree.XMLSchema(etree.parse(str(xsd)))
    files, kmz = report
    for doc in (etree.parse(str(files.kml)), etree.fromstring(zipfile.ZipFile(kmz.kml).read("doc.kml"))):
        assert schema.validate(doc), schema.error_log


def test_kmz_holds_doc_kml_and_the_thumbnails_it_refers_to(report, tmp_path):
    files, kmz = report
    assert kmz.kml.name == "damage.kmz" and not (kmz.kml.parent / "damage.kml").exists()
    with zipfile.ZipFile(kmz.kml) as z:
        names = z.namelist()
        assert names[0] == "doc.kml"  # Google Earth opens the first .kml in the archive
        thumbs = [n for n in names if n.startswith("files/")]
        # the 9 geotagged photos and the 3 ground frames have pictures; the other 2 placed do not
        assert len(thumbs) == 12 and len(names) == 13
        for n in thumbs:
            img = cv2.imdecode(np.frombuffer(z.read(n), np.uint8), cv2.IMREAD_COLOR)
            assert img is not None and max(img.shape[:2]) <= 224
        z.extractall(tmp_path)
    doc, folders = _placemarks(tmp_path / "doc.kml")
    srcs = [pm.description.split("src='", 1)[1].split("'", 1)[0]
            for pms in folders.values() for pm in pms if "<img" in (pm.description or "")]
    assert sorted(srcs) == sorted(thumbs)  # relative, each inside the archive
    assert all((tmp_path / s).is_file() for s in srcs)
    # the plain KML shows no pictures at all (no file references, no data: URIs)
    text = files.kml.read_text()
    assert "&lt;img" not in text and "<img" not in text and "data:image" not in text


def test_names_and_values_with_markup_survive(tmp_path, rows):
    flight = "Hatay & <north> \"A\""
    row = {**rows[GROUND_FLIGHT][0], "flight_id": flight, "reason": "x < y & z ]]>"}
    store = Store(tmp_path / "skysift.db")
    store.add_frames([row])
    store.close()
    files = write_report(tmp_path / "skysift.db", tmp_path / "out", threshold=THRESHOLD)
    doc, folders = _placemarks(files.kml)
    assert list(folders) == [flight]
    frame = folders[flight][0]
    values = {d.name: d.value for d in frame.extended_data.elements}
    assert values["flight_id"] == flight and values["reason"] == "x < y & z ]]>"
    assert "x &lt; y &amp; z ]]&gt;" in frame.description  # the balloon shows the text, not markup
    layers = _gdal(str(files.kml), skip_libkml=False)
    assert list(layers) == [flight] and len(layers[flight]["features"]) == 4


def test_cli_writes_the_kmz(report, tmp_path):
    db = report[0].kml.parent.parent / "skysift.db"
    cfg = tmp_path / "skysift.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"dir": str(db.parent)}, "camera": {"hfov_deg": 60.0}}))
    out = tmp_path / "maps"
    assert main(["-c", str(cfg), "report", GROUND_FLIGHT, "--out", str(out), "--kmz"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["damage-map.html", "damage.kmz", "frames.csv", "frames.geojson"]
    with zipfile.ZipFile(out / "damage.kmz") as z:
        assert len([n for n in z.namelist() if n.startswith("files/")]) == 3
