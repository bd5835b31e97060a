"""`skysift report [FLIGHT...] [--out DIR] [--kmz]`: offline damage maps (GeoJSON, CSV, HTML, KML)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write offline damage maps (GeoJSON, CSV, self-contained HTML, KML) of flights",
        description="Write frames.geojson, frames.csv, damage-map.html and damage.kml for the chosen "
        "flights (default: all), read from <storage.dir>/skysift.db. The HTML works with no network; "
        "the KML opens in Google Earth and QGIS.",
    )
    p.add_argument("flights", nargs="*", metavar="FLIGHT", help="flight id or name (default: all flights)")
    p.add_argument("--out", "-o", type=Path, default=Path("skysift-report"), metavar="DIR", help="output folder (default: ./skysift-report)")
    p.add_argument("--top", type=int, default=24, metavar="N", help="how many of the most damaged frames to show with thumbnails (default: 24)")
    p.add_argument("--title", default=None, metavar="TEXT", help="page title (default: the flight names)")
    p.add_argument(
        "--kmz",
        action="store_true",
        help="write damage.kmz (the KML with each frame's thumbnail inside) instead of damage.kml",
    )
    p.add_argument(
        "--bigquery-sql",
        action="store_true",
        help="print the cloud-side heat-map query (sync/heatmap.sql) for the configured "
        "BigQuery table instead, and exit",
    )
    p.set_defaults(func=_report)


def heatmap_sql(cfg) -> str:
    """sync/heatmap.sql with the configured de-duplicated frames view filled in."""
    from importlib.resources import files

    from agent.report.build import ReportError

    bq = cfg.sync.bigquery
    if not bq.project:
        raise ReportError("set sync.bigquery.project to print the heat-map query for its table")
    sql = (files("sync") / "heatmap.sql").read_text(encoding="utf-8")
    # The view `skysift sync init` creates (sync.bigquery.table_ids): <table>_dedup.
    return sql.replace("{frames_dedup}", f"`{bq.project}.{bq.dataset}.{bq.table}_dedup`")


def _report(args: argparse.Namespace) -> int:
    from agent.cli.common import load, show_path
    from agent.report.build import write_report
    from models.card import load_card

    cfg = load(args)
    if args.bigquery_sql:
        print(heatmap_sql(cfg), end="")
        return 0
    files = write_report(
        cfg.db_path,
        args.out,
        args.flights or None,
        hfov_deg=cfg.camera.hfov_deg,
        vfov_deg=cfg.camera.vfov_deg,
        storage_dir=cfg.storage.dir,
        top=args.top,
        title=args.title,
        # the model's own decision threshold: a tile the agent called damaged is damaged here
        threshold=load_card(cfg.model.path).p_damaged_threshold,
        basemap=cfg.report.basemap,
        thumb_px=cfg.report.thumb_px,
        kmz=args.kmz,
    )
    print(f"{files.frames} frames: {files.located} on the map, {files.unlocated} without position")
    if files.frames and not files.located:
        # The page says so too; say it here, where the user is looking right now.
        print("nothing on the map: no frame has a position (EXIF/XMP GPS, geotag.track or "
              "telemetry); the page lists every frame with why")
    for path in (files.html, files.geojson, files.csv, files.kml):
        print(show_path(path))
    return 0
