"""Offline damage maps from the SQLite buffer: the data (:mod:`agent.report.data`), the ground
geometry (:mod:`agent.report.geo`), the GeoJSON/CSV writers and :func:`write_report`
(:mod:`agent.report.build`) and the self-contained page (:mod:`agent.report.html`)."""

from agent.report.build import ReportFiles, to_geojson, write_csv, write_report
from agent.report.data import ReportData, ReportError, ReportFrame, collect
from agent.report.html import build_payload, render_html

__all__ = [
    "ReportData",
    "ReportError",
    "ReportFiles",
    "ReportFrame",
    "build_payload",
    "collect",
    "render_html",
    "to_geojson",
    "write_csv",
    "write_report",
]
