"""What a report shows: the chosen flights' frame rows with their positions and footprints.

:func:`collect` reads them once from the database; :mod:`agent.report.build` writes them as
GeoJSON and CSV and :mod:`agent.report.html` as the damage-map page, so neither writer imports
the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.core.errors import SkysiftError
from agent.report.geo import Footprint, LocalProjection, footprint, valid_position
from agent.report.ground import Ground, ground_problem, read_ground
from agent.store.db import Store, utcnow
from models.card import load_card


class ReportError(SkysiftError):
    """A report cannot be made: no database, or a flight named on the command line is unknown."""


@dataclass
class ReportFrame:
    """One frame row as the report sees it: the DB row plus its position and footprint.

    A frame with the pipeline's ground geometry (:mod:`agent.report.ground`) is placed where
    its tiles lie; any other is placed at the drone's position, and ``ground_problem`` says why.
    """

    row: dict[str, Any]
    position_problem: str | None  # None when the frame can be placed on the map
    xy: tuple[float, float] | None = None
    footprint: Footprint | None = None
    ground: Ground | None = None
    ground_problem: str | None = None  # why there is no ground geometry (None when there is)

    @property
    def located(self) -> bool:
        return self.position_problem is None

    @property
    def lonlat(self) -> tuple[float, float] | None:
        """Where the frame is drawn: the ground under it, else the drone's position."""
        if self.ground is not None:
            return self.ground.centre
        return (float(self.row["lon"]), float(self.row["lat"])) if self.located else None


@dataclass
class ReportData:
    """Everything a report shows, computed once and written in every format."""

    flights: list[dict[str, Any]]
    frames: list[ReportFrame]
    projection: LocalProjection
    hfov_deg: float | None
    vfov_deg: float | None
    threshold: float  # a tile counts as damaged from this p_damaged on (the model card's)
    generated_at: str = field(default_factory=utcnow)

    @property
    def located(self) -> list[ReportFrame]:
        return [f for f in self.frames if f.located]

    @property
    def unlocated(self) -> list[ReportFrame]:
        return [f for f in self.frames if not f.located]

    def flight_counts(self) -> list[dict[str, Any]]:
        """Per-flight counts recomputed from the selected frame rows (not the cached columns)."""
        out = []
        for fl in self.flights:
            rows = [f for f in self.frames if f.row["flight_id"] == fl["flight_id"]]
            out.append(
                {
                    "flight_id": fl["flight_id"],
                    "name": fl.get("name") or fl["flight_id"],
                    "started_at": fl.get("started_at"),
                    "ended_at": fl.get("ended_at"),
                    "frames": len(rows),
                    "classified": sum(f.row["status"] == "classified" for f in rows),
                    "damaged": sum(f.row.get("label") == "damaged" for f in rows),
                    "rejected": sum(f.row["status"] == "rejected" for f in rows),
                    "located": sum(f.located for f in rows),
                    "unlocated": sum(not f.located for f in rows),
                    "footprints": sum(f.footprint is not None for f in rows),
                }
            )
        return out


def select_flights(store: Store, wanted: list[str] | None) -> list[dict[str, Any]]:
    """The flights named in ``wanted`` (by id or name), or all flights when it is empty."""
    flights = store.flights()
    if not wanted:
        return flights
    chosen: list[dict[str, Any]] = []
    unknown: list[str] = []
    for w in wanted:
        match = [f for f in flights if f["flight_id"] == w] or [f for f in flights if f["name"] == w]
        if not match:
            unknown.append(w)
        for f in match:
            if f not in chosen:
                chosen.append(f)
    if unknown:
        known = ", ".join(f["flight_id"] for f in flights) or "none"
        raise ReportError(f"unknown flight(s): {', '.join(unknown)} (flights in the database: {known})")
    return chosen


def _frame(row: dict[str, Any], threshold: float) -> ReportFrame:
    problem = valid_position(row.get("lat"), row.get("lon"))
    ground = read_ground(row, threshold)
    if ground is not None:
        return ReportFrame(row, None, ground=ground)
    return ReportFrame(row, problem, ground_problem=ground_problem(row, problem))


def collect(
    store: Store,
    flight_ids: list[str] | None = None,
    hfov_deg: float | None = None,
    vfov_deg: float | None = None,
    *,
    threshold: float | None = None,
) -> ReportData:
    """Read the chosen flights' frames and compute positions and footprints.

    ``threshold`` is the model card's decision threshold (default: the shipped model's card): a
    tile from it on is damaged.
    """
    if threshold is None:
        threshold = load_card().p_damaged_threshold
    flights = select_flights(store, flight_ids)
    rows = [row for fl in flights for row in store.frames(fl["flight_id"])]
    frames, proj = locate(rows, threshold, hfov_deg, vfov_deg)
    return ReportData(flights, frames, proj, hfov_deg, vfov_deg, threshold)


def locate(
    rows: list[dict[str, Any]],
    threshold: float,
    hfov_deg: float | None = None,
    vfov_deg: float | None = None,
    projection: LocalProjection | None = None,
) -> tuple[list[ReportFrame], LocalProjection]:
    """Frame rows as report frames, placed in ``projection`` (default: one around them).

    A live map (agent.station) passes the projection it already drew with, so that the page's
    view does not jump as frames arrive.
    """
    frames = [_frame(row, threshold) for row in rows]
    proj = projection or LocalProjection.around(
        [(ll[1], ll[0]) for f in frames if (ll := f.lonlat) is not None]
    )
    for f in frames:
        if f.ground is not None:
            f.xy = proj.to_xy(f.ground.centre[1], f.ground.centre[0])
            f.footprint = f.ground.footprint(proj)
        elif f.located:
            f.xy = proj.to_xy(f.row["lat"], f.row["lon"])
            f.footprint = footprint(f.row, f.xy, hfov_deg, vfov_deg, threshold=threshold)
    return frames, proj
