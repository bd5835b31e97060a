"""Offline damage maps from the SQLite buffer: the data (:mod:`agent.report.data`), the ground
geometry (the pipeline's, :mod:`agent.report.ground`, else assumed, :mod:`agent.report.geo`), the
GeoJSON/CSV writers and :func:`write_report` (:mod:`agent.report.build`), the self-contained page
(:mod:`agent.report.html`) with its picture layers (:mod:`agent.report.layers`: the frames'
mosaic and the optional MBTiles basemap, :mod:`agent.report.mbtiles`) and the KML/KMZ for
Google Earth and QGIS (:mod:`agent.report.kml`)."""

from agent.report.build import ReportFiles, to_geojson, write_csv, write_report
from agent.report.data import ReportData, ReportError, ReportFrame, collect
from agent.report.html import build_payload, render_html
from agent.report.kml import build_kml, write_kml, write_kmz
from agent.report.mbtiles import Basemap, BasemapError, read_basemap

__all__ = [
    "Basemap",
    "BasemapError",
    "ReportData",
    "ReportError",
    "ReportFiles",
    "ReportFrame",
    "build_kml",
    "build_payload",
    "collect",
    "read_basemap",
    "render_html",
    "to_geojson",
    "write_csv",
    "write_kml",
    "write_kmz",
    "write_report",
]
