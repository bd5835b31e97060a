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
from pathlib import Path

log = logging.getLogger(__name__)

#: extensions picked up when walking a folder (a file named on the command line is always tried)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".bmp", ".webp"}
#: frames decoded and classified together (their tiles share batches), bounded in count and in
#: decoded pixels so a folder of 12 MP frames does not hold gigabytes of arrays at once
CHUNK_FRAMES = 16
CHUNK_PIXELS = 48_000_000


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
    from agent.cli.common import load
    from agent.core.errors import ImageError, InferenceError
    from agent.imaging.decode import read_image_file
    from models.factory import create_frame_classifier

    cfg = load(args)
    mcfg = _model_cfg(args, cfg)
    cache_dir = mcfg.cache_dir or cfg.storage.dir / "ov-cache"
    fc = create_frame_classifier(mcfg, cache_dir)
    decode_kw = {
        "tile_px": mcfg.tile_px,
        "input_px": fc.input_px,
        "max_pixels": mcfg.max_pixels,
        "camera_timezone": cfg.geotag.camera_timezone,
    }
    max_bytes = int(mcfg.max_file_mb * 1024 * 1024)
    counts = {"damaged": 0, "undamaged": 0, "failed": 0}
    out = sys.stdout

    def emit(row: dict) -> None:
        if row["error"]:
            counts["failed"] += 1
        else:
            counts[row["label"]] += 1
        if args.json:
            if not args.grid:
                row.pop("grid", None)
            out.write(json.dumps(row) + "\n")
        else:
            out.write(_human(row) + "\n")
        out.flush()

    chunk: list[tuple[Path, object]] = []

    def flush() -> None:
        ok = [(p, d) for p, d in chunk if not isinstance(d, ImageError)]
        results: dict[Path, object] = {}
        if ok:
            try:
                for (p, _), r in zip(ok, fc.classify([d for _, d in ok]), strict=True):
                    results[p] = r
            except InferenceError as exc:
                for p, _ in ok:
                    results[p] = ImageError("inference", str(exc))
        for p, d in chunk:
            emit(_row(p, d, results.get(p, d)))
        chunk.clear()

    try:
        for path in iter_images(args.paths):
            try:
                decoded = read_image_file(path, max_file_bytes=max_bytes, **decode_kw)
            except ImageError as exc:
                decoded = exc
            chunk.append((path, decoded))
            pixels = sum(d.gray.size for _, d in chunk if not isinstance(d, ImageError))
            if len(chunk) >= CHUNK_FRAMES or pixels >= CHUNK_PIXELS:
                flush()
        flush()
    finally:
        fc.close()
    total = sum(counts.values())
    print(
        f"{total} image(s): {counts['damaged']} damaged, {counts['undamaged']} undamaged, "
        f"{counts['failed']} failed [{fc.engine}/{fc.device} {fc.precision}]",
        file=sys.stderr,
    )
    return 1 if counts["failed"] or total == 0 else 0


def _row(path: Path, decoded, result) -> dict:
    from agent.core.errors import ImageError

    row: dict = {
        "path": str(path),
        "label": None,
        "p_damaged": None,
        "engine": None,
        "device": None,
        "precision": None,
        "tiles": None,
        "damaged_tiles": None,
        "width": None,
        "height": None,
        "lat": None,
        "lon": None,
        "alt": None,
        "captured_at": None,
        "inference_ms": None,
        "sha256": None,
        "error": None,
    }
    if not isinstance(decoded, ImageError):
        ex = decoded.exif
        row.update(
            width=decoded.width, height=decoded.height, lat=ex.lat, lon=ex.lon, alt=ex.alt,
            captured_at=ex.captured_at, sha256=decoded.sha256,
        )
    if isinstance(result, ImageError):
        row["error"] = {"reason": result.reason, "message": str(result)}
        return row
    row.update(
        label=result.label,
        p_damaged=round(result.p_damaged, 5),
        engine=result.engine,
        device=result.device,
        precision=result.precision,
        tiles=result.tiles,
        damaged_tiles=result.damaged_tiles,
        inference_ms=round(result.inference_ms, 3),
        grid=result.grid,
    )
    return row


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
