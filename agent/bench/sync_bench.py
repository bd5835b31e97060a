"""Sync benchmark: rows/s into BigQuery and images/s into GCS (the emulators), vs the 2020 way.

The 2020 project sent each classified image on its own: one upload and one streaming
``insertAll`` call per image, in sequence. skysift sends rows as load jobs of
``sync.batch_rows`` rows and uploads a few images at once. The skysift path is measured on the
full flight (default 10,000 frames); the 2020 path on a smaller N (default 200) and
extrapolated linearly to the flight, which is stated in the result (per-call cost does not
shrink with N, so linear is if anything generous to it).

Both run against the same local emulators (fake-gcs-server, local-bigquery) over loopback:
absolute figures say little about a real uplink, the ratio of calls is what carries over.

``python -m agent.bench.sync_bench --n 10000`` prints the result as JSON; ``skysift bench --sync`` calls
:func:`run_sync_bench`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from agent.core.config import Config, parse_config
from agent.store.db import Store

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


def _tiles(data_dir: Path | None) -> list[bytes]:
    """Real tiles from ``data_dir`` (the shared data folder, or its aerial-damage folder)."""
    base = Path(data_dir or DEFAULT_DATA)
    if (base / "aerial-damage").is_dir():
        base = base / "aerial-damage"
    files = sorted(base.glob("*/*.png"))
    if files:
        return [f.read_bytes() for f in files]
    # No shared data here: synthesize small PNGs of the same size (128x128 grayscale).
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    return [cv2.imencode(".png", rng.integers(0, 255, (128, 128), dtype=np.uint8))[1].tobytes()
            for _ in range(50)]


def _make_flight(store: Store, tiles: list[bytes], out: Path, n: int, flight_id: str, tag: str) -> None:
    """``n`` frames of real tiles (a tag appended after the PNG end makes each file unique)."""
    out.mkdir(parents=True, exist_ok=True)
    t0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
    store.start_run({"run_id": f"bench-{tag}", "device_id": "bench", "hostname": "bench"})
    rows = []
    for i in range(n):
        data = tiles[i % len(tiles)] + f"skysift-bench-{tag}-{i}".encode()
        sha = hashlib.sha256(data).hexdigest()
        path = out / f"{sha[:32]}.png"
        path.write_bytes(data)
        damaged = i % 3 == 0
        rows.append({
            "frame_id": sha[:32], "flight_id": flight_id, "source": "camera",
            "image_path": str(path), "sha256": sha, "bytes": len(data), "status": "classified",
            "label": "damaged" if damaged else "undamaged", "p_damaged": 0.9 if damaged else 0.1,
            "tiles": 1, "damaged_tiles": int(damaged), "tile_px": 128, "tile_grid": [[0.5]],
            "width": 128, "height": 128, "lat": 40.4 + i * 1e-5, "lon": -3.7 - i * 1e-5, "alt": 100.0,
            "geo_source": "exif",
            "captured_at": (t0 + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
            "engine": "openvino", "device": "CPU", "precision": "f32", "inference_ms": 3.0,
            "total_ms": 8.0, "run_id": f"bench-{tag}",
        })
        if len(rows) == 1000:
            store.add_frames(rows)
            rows = []
    if rows:
        store.add_frames(rows)


def run_sync_bench(
    n_frames: int = 10_000,
    work_dir: Path | None = None,
    data_dir: Path | None = None,
    baseline_n: int = 200,
    batch_rows: int = 500,
    gcs_endpoint: str | None = None,
    bq_endpoint: str | None = None,
) -> dict[str, Any]:
    """Measure the sync of one ``n_frames`` flight (all images uploaded) and the 2020 way.

    Starts its own emulators in ``work_dir`` unless endpoints are given. Returns figures and a
    ``markdown`` table.
    """
    own_tmp = work_dir is None
    work = Path(work_dir or tempfile.mkdtemp(prefix="skysift-syncbench-"))
    work.mkdir(parents=True, exist_ok=True)
    emulators: list[Any] = []
    try:
        gcs_endpoint, bq_endpoint = _endpoints(work, gcs_endpoint, bq_endpoint, emulators)
        cfg = _bench_config(work, gcs_endpoint, bq_endpoint, batch_rows)
        tiles = _tiles(data_dir)
        rows_s, images_s = _time_skysift(cfg, tiles, work, n_frames)
        ins_s, up_s = _time_2020(cfg, tiles, work, baseline_n)
    finally:
        for e in emulators:
            e.stop()
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)
    return _result(n_frames, batch_rows, baseline_n, rows_s, images_s, ins_s, up_s)


def _endpoints(
    work: Path, gcs_endpoint: str | None, bq_endpoint: str | None, emulators: list[Any]
) -> tuple[str, str]:
    """The endpoints given, or those of emulators started here (appended to ``emulators`` at
    once, so that the caller stops one that started even when the next fails to)."""
    from sync.emulators import FakeGcs, LocalBigQuery

    if gcs_endpoint is None:
        emulators.append(FakeGcs(work / "gcs").start())
        gcs_endpoint = emulators[-1].endpoint
    if bq_endpoint is None:
        emulators.append(LocalBigQuery(work / "bq").start())
        bq_endpoint = emulators[-1].endpoint
    return gcs_endpoint, bq_endpoint


def _bench_config(work: Path, gcs_endpoint: str, bq_endpoint: str, batch_rows: int) -> Config:
    """A configuration syncing every image, with a bucket and dataset of its own, both created.

    The names carry the time so that a second run against the same long-lived emulators does
    not meet the first run's objects and tables.
    """
    from sync.bigquery import init_dataset
    from sync.emulators import BQ_PROJECT
    from sync.gcs import init_bucket

    stamp = str(int(time.time()))
    cfg = parse_config({
        "device_id": "bench",
        "storage": {"dir": str(work / "data")},
        "sync": {
            "gcs": {"bucket": f"bench-{stamp}", "endpoint": gcs_endpoint},
            "bigquery": {"project": BQ_PROJECT, "dataset": f"bench_{stamp}", "endpoint": bq_endpoint},
            "upload_images": "all",
            "batch_rows": batch_rows,
        },
    })
    init_bucket(cfg)
    init_dataset(cfg)
    return cfg


def _time_skysift(cfg: Config, tiles: list[bytes], work: Path, n_frames: int) -> tuple[float, float]:
    """Seconds to push every row (load jobs), then every image (uploads in flight), of one flight."""
    from sync.bigquery import FrameRows
    from sync.gcs import GcsImages

    store = Store(cfg.db_path)
    _make_flight(store, tiles, work / "data" / "frames" / "bench", n_frames, "bench", "new")
    rows_t = FrameRows(cfg)
    t = time.perf_counter()
    while rows_t.pending(store):
        rows_t.push(store, 10_000)
    rows_s = time.perf_counter() - t

    images = [GcsImages(cfg, "damaged"), GcsImages(cfg, "rest", client=None)]
    t = time.perf_counter()
    for target in images:
        while target.pending(store):
            target.push(store, 64)
    images_s = time.perf_counter() - t
    for target in images:
        target.close()
    store.close()
    return rows_s, images_s


def _time_2020(cfg: Config, tiles: list[bytes], work: Path, baseline_n: int) -> tuple[float, float]:
    """Seconds of insertAll calls and of uploads, the 2020 way: per image, one of each, in turn."""
    from google.cloud import bigquery

    from sync.bigquery import table_ids
    from sync.clients import bigquery_client, storage_client
    from sync.schema import FRAME_FIELDS, bq_schema, frame_row

    bq = bigquery_client(cfg)
    old_table = f"{table_ids(cfg)['frames']}_2020"
    bq.create_table(bigquery.Table(old_table, schema=bq_schema(FRAME_FIELDS)), exists_ok=True)
    bucket = storage_client(cfg).bucket(cfg.sync.gcs.bucket)
    old_store = Store(work / "old.db")
    _make_flight(old_store, tiles, work / "old", baseline_n, "bench-2020", "old")
    up_s = ins_s = 0.0
    for f in old_store.frames():
        t = time.perf_counter()
        bucket.blob(f"2020/{f['frame_id']}.png").upload_from_filename(f["image_path"], content_type="image/png")
        up_s += time.perf_counter() - t
        t = time.perf_counter()
        errors = bq.insert_rows_json(old_table, [frame_row(f, "bench", None, None, f["classified_at"])])
        ins_s += time.perf_counter() - t
        if errors:
            raise RuntimeError(f"2020 insertAll failed: {errors}")
    old_store.close()
    return ins_s, up_s


def _result(
    n_frames: int, batch_rows: int, baseline_n: int, rows_s: float, images_s: float, ins_s: float, up_s: float
) -> dict[str, Any]:
    """The figures, rounded for the report, and the Markdown table ``skysift bench`` quotes."""
    old_rows_per_s = baseline_n / ins_s
    old_images_per_s = baseline_n / up_s
    res: dict[str, Any] = {
        "n_frames": n_frames,
        "batch_rows": batch_rows,
        "rows_seconds": round(rows_s, 2),
        "rows_per_s": round(n_frames / rows_s, 1),
        "images_seconds": round(images_s, 2),
        "images_per_s": round(n_frames / images_s, 1),
        "baseline_n": baseline_n,
        "baseline_rows_per_s": round(old_rows_per_s, 1),
        "baseline_images_per_s": round(old_images_per_s, 1),
        # linear in N: the per-call cost of the 2020 way does not shrink with the flight
        "baseline_extrapolated_s": round((ins_s + up_s) * n_frames / baseline_n, 1),
        "skysift_total_s": round(rows_s + images_s, 1),
        "rows_speedup": round((n_frames / rows_s) / old_rows_per_s, 1),
        "images_speedup": round((n_frames / images_s) / old_images_per_s, 1),
        "note": f"2020 approach measured on {baseline_n} frames and extrapolated linearly "
        f"to {n_frames}; both against local emulators over loopback",
    }
    res["markdown"] = "\n".join([
        f"| {n_frames:,}-frame flight (emulators, loopback) | rows/s | images/s | total s |",
        "| --- | --- | --- | --- |",
        f"| skysift: load jobs of {batch_rows} rows, 4 uploads in flight | {res['rows_per_s']} "
        f"| {res['images_per_s']} | {res['skysift_total_s']} |",
        f"| 2020: one upload + one insertAll per image (measured on {baseline_n}, extrapolated) "
        f"| {res['baseline_rows_per_s']} | {res['baseline_images_per_s']} | {res['baseline_extrapolated_s']} |",
    ])
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.bench.sync_bench", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="frames in the flight (default 10000)")
    p.add_argument("--baseline-n", type=int, default=200, help="frames for the 2020 way")
    p.add_argument("--batch-rows", type=int, default=500)
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--data-dir", type=Path, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    res = run_sync_bench(a.n, a.work_dir, a.data_dir, a.baseline_n, a.batch_rows)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
