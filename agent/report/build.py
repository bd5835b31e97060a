"""`skysift report`: offline damage maps of one or more flights, from the SQLite buffer.

Writes four files into one folder:

- ``frames.geojson``: a point per frame, the ground footprint and the damaged tiles as polygons.
  Where the pipeline placed the frame on the ground (:mod:`agent.report.ground`) the point is the
  middle of its tiles on the ground and the polygons are the pipeline's; otherwise the point is
  the drone's position and the footprint is assumed (:mod:`agent.report.geo`), and
  ``ground_problem`` says why. Frames without a position as features with a ``null`` geometry (RFC 7946
  "unlocated" features) so that no frame is dropped;
- ``frames.csv``: the same frames, one row each;
- ``damage-map.html``: one self-contained page (no network at all) built by
  :mod:`agent.report.html`;
- ``damage.kml`` (or ``damage.kmz`` with thumbnails): the same frames, footprints and damaged
  tiles for Google Earth and QGIS, one folder per flight, built by :mod:`agent.report.kml`.

Everything is read from the database, which is the source of truth; the report never writes to
it and can be made while the agent runs.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.report.data import ReportData, ReportError, ReportFrame, collect
from agent.report.geo import LocalProjection
from agent.report.html import render_html
from agent.report.images import MOSAIC_PX
from agent.report.kml import KML_NAME, KMZ_NAME, write_kml, write_kmz
from agent.store.columns import frame_columns
from agent.store.db import Store

log = logging.getLogger(__name__)

GEOJSON_NAME = "frames.geojson"
CSV_NAME = "frames.csv"
HTML_NAME = "damage-map.html"

#: CSV columns, in order; also the properties of the GeoJSON points
CSV_COLUMNS = [
    *frame_columns(
        "frame_id", "flight_id", "status", "reason", "label", "p_damaged", "tiles", "damaged_tiles",
        "lat", "lon", "alt", "geo_source",
    ),
    "position_problem",  # computed by the report: why a frame cannot be placed
    "ground_lat",  # computed: where the frame's tiles lie (their mean centre), when known
    "ground_lon",
    "ground_problem",  # computed: why not (no position, no pose, ray missed)
    *frame_columns("captured_at", "classified_at", "width", "height", "tile_px"),
    "footprint_w_m",  # computed: the frame's ground size
    "footprint_h_m",
    *frame_columns("image_path"),
]


def _ring_lonlat(proj: LocalProjection, ring: list[tuple[float, float]]) -> list[list[float]]:
    return [[round(v, 8) for v in proj.to_lonlat(x, y)] for x, y in ring]


def _props(f: ReportFrame) -> dict[str, Any]:
    r = f.row
    return {
        "frame_id": r["frame_id"],
        "flight_id": r["flight_id"],
        "status": r["status"],
        "label": r.get("label"),
        "p_damaged": r.get("p_damaged"),
        "tiles": r.get("tiles"),
        "damaged_tiles": r.get("damaged_tiles"),
        "captured_at": r.get("captured_at"),
        "alt": r.get("alt"),
        "geo_source": r.get("geo_source"),
        "pose_source": r.get("pose_source"),
        "ground_problem": f.ground_problem,
    }


def _tile_props(f: ReportFrame, r: int, c: int, p: float) -> dict[str, Any]:
    props = {"kind": "damaged_tile", "frame_id": f.row["frame_id"], "flight_id": f.row["flight_id"],
             "row": r, "col": c, "p_damaged": round(p, 4)}
    if f.ground is not None:
        centre = next((ll for rr, cc, _, _, ll in f.ground.damaged if (rr, cc) == (r, c)), None)
        if centre is not None:
            props["lon"], props["lat"] = round(centre[0], 8), round(centre[1], 8)
    return props


def to_geojson(data: ReportData) -> dict[str, Any]:
    """A GeoJSON FeatureCollection (RFC 7946: WGS 84 lon/lat, counter-clockwise rings).

    Each feature has ``properties.kind``: ``frame`` (a point, or ``null`` geometry when the frame
    has no position, with ``position_problem`` saying why), ``footprint`` or ``damaged_tile``.
    """
    feats: list[dict[str, Any]] = []
    for f in data.frames:
        props = {"kind": "frame", **_props(f)}
        if not f.located:
            feats.append(
                {"type": "Feature", "geometry": None, "properties": {**props, "position_problem": f.position_problem}}
            )
            continue
        point = [round(v, 8) for v in f.lonlat]  # type: ignore[union-attr]
        feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": point}, "properties": props})
        fp = f.footprint
        if fp is None:
            continue
        feats.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [_ring_lonlat(data.projection, fp.outline)]},
                "properties": {
                    "kind": "footprint",
                    **_props(f),
                    "ground_w_m": round(fp.ground_w, 2),
                    "ground_h_m": round(fp.ground_h, 2),
                    "footprint_source": fp.source,
                },
            }
        )
        for r, c, p, ring in fp.damaged_tiles:
            feats.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [_ring_lonlat(data.projection, ring)]},
                    "properties": _tile_props(f, r, c, p),
                }
            )
    return {
        "type": "FeatureCollection",
        "features": feats,
        # Foreign members (allowed by RFC 7946 section 6.1): how the polygons were made.
        "skysift": {
            "generated_at": data.generated_at,
            "flights": [f["flight_id"] for f in data.flights],
            "frames": len(data.frames),
            "unlocated": len(data.unlocated),
            "camera": {"hfov_deg": data.hfov_deg, "vfov_deg": data.vfov_deg},
            "tile_threshold": data.threshold,
            "footprint_sources": {
                "pose": "the pipeline's ray cast of the camera pose onto the terrain",
                "nadir": "assumed: nadir camera, flat ground, alt = height above ground in metres, "
                "north-up unless a heading is known, local equirectangular projection",
            },
        },
    }


def write_csv(data: ReportData, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for f in data.frames:
            row = {k: f.row.get(k) for k in CSV_COLUMNS}
            row["position_problem"] = f.position_problem
            row["ground_problem"] = f.ground_problem
            if f.ground is not None:
                row["ground_lon"], row["ground_lat"] = (round(v, 8) for v in f.ground.centre)
            if f.footprint is not None:
                row["footprint_w_m"] = round(f.footprint.ground_w, 2)
                row["footprint_h_m"] = round(f.footprint.ground_h, 2)
            w.writerow(row)


@dataclass
class ReportFiles:
    geojson: Path
    csv: Path
    html: Path
    kml: Path  # damage.kml, or damage.kmz with the thumbnails
    frames: int
    located: int
    unlocated: int


def write_report(
    db_path: Path,
    out_dir: Path,
    flight_ids: list[str] | None = None,
    *,
    hfov_deg: float | None = None,
    vfov_deg: float | None = None,
    storage_dir: Path | None = None,
    top: int = 24,
    title: str | None = None,
    threshold: float | None = None,
    basemap: Path | None = None,
    thumb_px: int = MOSAIC_PX,
    kmz: bool = False,
) -> ReportFiles:
    """Write the GeoJSON, CSV, HTML and KML report of the chosen flights (all when None) to ``out_dir``.

    ``storage_dir`` is where relative image paths are looked up for thumbnails. ``threshold`` is
    the model card's decision threshold (default: the shipped model's card); ``basemap`` an
    optional MBTiles file drawn under the frames; ``thumb_px`` the long side of mosaic images;
    ``kmz`` writes ``damage.kmz`` with thumbnails instead of the plain ``damage.kml``.
    """
    if not Path(db_path).is_file():
        raise ReportError(f"no skysift database at {db_path} (check storage.dir in the configuration)")
    store = Store(db_path, readonly=True)
    try:
        data = collect(store, flight_ids, hfov_deg, vfov_deg, threshold=threshold)
    finally:
        store.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out_dir / GEOJSON_NAME, out_dir / CSV_NAME, out_dir / HTML_NAME,
                        out_dir / (KMZ_NAME if kmz else KML_NAME),
                        len(data.frames), len(data.located), len(data.unlocated))
    # json.dumps, not json.dump: dump streams through the pure-Python encoder, 5x slower here.
    files.geojson.write_text(json.dumps(to_geojson(data), separators=(",", ":")), encoding="utf-8")
    write_csv(data, files.csv)
    files.html.write_text(
        render_html(data, storage_dir=storage_dir, top=top, title=title, basemap_path=basemap, mosaic_px=thumb_px),
        encoding="utf-8",
    )
    if kmz:
        write_kmz(data, files.kml, storage_dir=storage_dir, title=title)
    else:
        write_kml(data, files.kml, title=title)
    log.info(
        "report of %d flight(s): %d frames, %d located, %d without position -> %s",
        len(data.flights), len(data.frames), files.located, files.unlocated, out_dir,
    )
    return files
