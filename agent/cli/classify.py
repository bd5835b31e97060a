"""`skysift classify PATH...`: classify image files or folders once, no database, no agent.

One result per image, in the order given (folders are walked recursively, sorted). A file that
cannot be classified (corrupt, truncated, empty, not an image, too large) gets a result with
``error`` set and the others are still classified; the exit status is 1 if any file failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the handler imports them: `skysift --help` stays fast
    from agent.ingest import ClassifierStage, Decoder, Job

log = logging.getLogger(__name__)

#: extensions picked up when walking a folder (a file named on the command line is always tried)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".bmp", ".webp"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="classify image files or folders as damaged/undamaged",
        description="Classify images (files, or folders walked recursively) with the configured "
        "model. Prints one line per image; exit status 1 if any file could not be classified.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--engine", choices=["auto", "openvino", "tensorflow"], help="override model.engine")
    p.add_argument(
        "--device",
        help="override model.devices: one OpenVINO device or a comma-separated priority list "
        "(CPU, GPU, NPU, AUTO, 'GPU,CPU')",
    )
    p.add_argument(
        "--precision", choices=["auto", "f32", "bf16", "f16", "int8"], help="override model.precision"
    )
    p.add_argument("--tile-px", type=int, help="override model.tile_px (tile side in original pixels)")
    p.add_argument("--model", help="override model.path (a directory with model_card.json)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--grid", action="store_true", help="with --json, add the per-tile p_damaged grid")
    p.set_defaults(func=run)


def iter_images(paths: list[str]) -> Iterator[Path]:
    """Files as given; folders walked recursively (sorted), keeping image extensions only."""
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
                    yield f
        else:
            yield p  # a missing file is reported as unreadable, not silently dropped


def _model_cfg(args: argparse.Namespace, cfg):
    update: dict = {}
    if args.engine:
        update["engine"] = args.engine
    if args.device:
        update["devices"] = [d.strip().upper() for d in args.device.split(",") if d.strip()]
    if args.precision:
        update["precision"] = args.precision
    if args.tile_px is not None:  # not `if args.tile_px`: 0 must be refused, not ignored
        if not 16 <= args.tile_px <= 8192:
            raise SystemExit("skysift classify: --tile-px must be between 16 and 8192")
        update["tile_px"] = args.tile_px
    if args.model:
        update["path"] = Path(args.model)
    return cfg.model.model_copy(update=update)


def run(args: argparse.Namespace) -> int:
    from agent.cli.common import load, user_cache_dir
    from agent.ingest import (
        BatchSizer,
        ClassifierStage,
        Counts,
        Decoder,
        Locator,
        Reader,
        build_row,
    )
    from agent.store.db import utcnow
    from drivers.base import Frame
    from models.factory import create_frame_classifier

    cfg = load(args)
    mcfg = _model_cfg(args, cfg)
    # No agent, no storage directory: the compiled-model cache is the user's (README "classify").
    cache_dir = mcfg.cache_dir or user_cache_dir() / "ov-cache"
    fc = create_frame_classifier(mcfg, cache_dir)
    # The agent's own stages, so that a file classified here gets the agent's answer.
    counts = Counts()
    reader = Reader(mcfg.max_file_mb, counts)
    locator = Locator(cfg.model_copy(update={"model": mcfg}))  # --tile-px moves the tiles
    decoder = Decoder(mcfg, fc.input_px, cfg.geotag.camera_timezone, counts, locator)
    stage = ClassifierStage(fc, counts)
    sizer = BatchSizer()
    tally = {"damaged": 0, "undamaged": 0, "failed": 0}
    out = sys.stdout
    try:
        paths = iter_images(args.paths)
        while batch := list(islice(paths, sizer.frames)):
            jobs = [reader.read(Frame(flight_id="", source=str(p), path=p)) for p in batch]
            _classify(jobs, decoder, stage)
            sizer.update(jobs)
            now = utcnow()
            for job in jobs:
                row = _result(job, build_row(
                    job, "", now, positions=[], run_id=None, clock_offset_s=cfg.geotag.clock_offset_s
                ))
                tally["failed" if row["error"] else row["label"]] += 1
                if args.json:
                    if not args.grid:
                        row.pop("grid", None)
                        row.pop("tile_centers", None)
                    out.write(json.dumps(row) + "\n")
                else:
                    out.write(_human(row) + "\n")
                out.flush()
    finally:
        fc.close()
    total = sum(tally.values())
    print(
        f"{total} image(s): {tally['damaged']} damaged, {tally['undamaged']} undamaged, "
        f"{tally['failed']} failed [{fc.engine}/{fc.device} {fc.precision}]",
        file=sys.stderr,
    )
    return 1 if tally["failed"] or total == 0 else 0


def _classify(jobs: list[Job], decoder: Decoder, stage: ClassifierStage) -> None:
    """Decode and classify ``jobs`` in place; a file is never silently left out."""
    from agent.ingest import PipelineError, Reject

    for job in jobs:
        if job.changed and job.reject is None:
            job.reject = Reject("unreadable", f"{job.frame.source} changed while being read")
        if job.reject is None:
            decoder.decode(job)
    try:
        stage.classify(jobs)
    except PipelineError as exc:  # the agent would stop; here every frame of the batch failed
        for job in jobs:
            if job.classifiable and job.result is None:
                job.reject = Reject("inference_error", str(exc))


#: the JSON fields taken from the frame's row as they are
ROW_FIELDS = (
    "label", "p_damaged", "engine", "device", "precision", "tiles", "damaged_tiles", "width",
    "height", "lat", "lon", "alt", "alt_agl", "agl_source", "pose_source", "footprint",
    "captured_at", "inference_ms", "sha256",
)


def _result(job: Job, row: dict) -> dict:
    """One output line's fields, from the row the agent would commit for this file."""
    from agent.ingest import Reject

    res: dict = {"path": job.frame.source}
    for k in ROW_FIELDS:
        if k == "pose_source":
            res["pose"] = {a: row[a] for a in ("yaw", "pitch", "roll")}
        res[k] = row[k]
    res["error"] = None
    # always a list, [] when none: the decoder's quirks and the geometry's refusals, {reason, message}
    res["warnings"] = row.get("warnings") or []
    if row["status"] == "rejected":
        reason, message = job.reject or Reject("unclassified", "no result")
        res["error"] = {"reason": reason, "message": message}
        return res
    res["p_damaged"] = round(row["p_damaged"], 5)
    res["grid"] = row["tile_grid"]
    res["tile_centers"] = row["tile_centers"]
    return res


def _human(row: dict) -> str:
    if row["error"]:
        return f"{row['path']}: ERROR {row['error']['reason']}: {row['error']['message']}"
    parts = [
        f"{row['path']}: {row['label'].upper():9s} p_damaged={row['p_damaged']:.3f}",
        f"tiles {row['damaged_tiles']}/{row['tiles']} damaged",
        f"{row['width']}x{row['height']}",
        f"[{row['engine']}/{row['device']} {row['precision']}, {row['inference_ms']:.1f} ms]",
    ]
    if row["lat"] is not None:
        alt = f", {row['alt']:.1f} m" if row["alt"] is not None else ""
        parts.append(f"at {row['lat']:.6f},{row['lon']:.6f}{alt}")
    if row["captured_at"]:
        parts.append(row["captured_at"])
    return "  ".join(parts)
