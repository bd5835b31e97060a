"""One frame, one row: the ``frames`` row built from a finished :class:`Job`.

The agent's commit, ``skysift classify`` and ``skysift bench`` all build their rows here, so
what they report is what the agent stores. The keys are :data:`agent.store.columns.FRAME_COLUMNS`.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from agent.imaging.geotag import PositionSource, geotag, iso_utc, shift
from agent.ingest.job import Job
from agent.store.columns import FRAME_COLUMNS


def captured_at(job: Job, clock_offset_s: float) -> str | None:
    """EXIF time (camera clock), else the camera grab time, else the file mtime (camera clock).

    ``clock_offset_s`` (``geotag.clock_offset_s``) corrects the camera clock; a grab time is the
    computer's own clock and is taken as it is.
    """
    exif = job.image.exif if job.image is not None else None
    if exif is not None and exif.captured_at:
        return shift(exif.captured_at, clock_offset_s)
    if job.frame.captured_at:
        return job.frame.captured_at
    mtime_ns = job.frame.meta.get("mtime_ns")
    if mtime_ns is not None:
        return shift(iso_utc(datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc)), clock_offset_s)
    return None


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def build_row(
    job: Job,
    flight_id: str,
    now: str,
    *,
    positions: list[PositionSource],
    run_id: str | None,
    clock_offset_s: float = 0.0,
) -> dict[str, Any]:
    """The frames row of ``job``: classified when it has a result and no reject, else rejected.

    ``now`` is the classification time (one per committed batch); ``positions`` are the
    geotag sources tried after EXIF, in order.
    """
    frame, img, res, loc = job.frame, job.image, job.result, job.location
    when = captured_at(job, clock_offset_s)
    if loc is not None:  # located in the decode step, with the same sources
        lat, lon, alt, geo_source = loc.lat, loc.lon, loc.alt, loc.geo_source
    else:
        lat, lon, alt, geo_source = geotag(img.exif if img is not None else None, when, positions)
    row: dict[str, Any] = dict.fromkeys(FRAME_COLUMNS)
    row.update(
        frame_id=job.frame_id,
        flight_id=flight_id,
        source=frame.source,
        image_path=str(frame.path) if frame.path is not None else None,
        sha256=job.sha256,
        bytes=job.size,
        status="rejected" if job.reject or res is None else "classified",
        reason=job.reject.reason if job.reject else None,
        width=img.width if img is not None else None,
        height=img.height if img is not None else None,
        lat=lat,
        lon=lon,
        alt=alt,
        geo_source=geo_source,
        captured_at=when,
        classified_at=now,
        total_ms=round((time.perf_counter() - job.started) * 1000, 3),
        run_id=run_id,
    )
    if loc is not None:
        pose = loc.pose
        row.update(
            alt_agl=_rounded(pose.alt_agl, 3),
            alt_msl=_rounded(pose.alt_msl, 3),
            agl_source=pose.agl_source,
            yaw=_rounded(pose.yaw, 4),
            pitch=_rounded(pose.pitch, 4),
            roll=_rounded(pose.roll, 4),
            pose_source=pose.pose_source,
            footprint=loc.footprint,
            tile_centers=loc.tile_centers,
            tile_corners=loc.tile_corners,
        )
    # What was odd about a frame still classified: the decoder's quirks of a file that decoded
    # in full, then the geometry's refusals (one list of {reason, message}); None when nothing.
    decoded = [w._asdict() for w in img.warnings] if img is not None else []
    row["warnings"] = (decoded + list(job.warnings)) or None
    if res is not None and not job.reject:
        row.update(
            label=res.label,
            p_damaged=float(res.p_damaged),
            tiles=int(res.tiles),
            damaged_tiles=int(res.damaged_tiles),
            tile_px=int(res.tile_px),
            tile_grid=[[round(float(v), 5) for v in r] for r in res.grid],
            width=int(res.width),
            height=int(res.height),
            engine=res.engine,
            device=res.device,
            precision=res.precision,
            inference_ms=round(float(res.inference_ms), 3),
        )
    return row
