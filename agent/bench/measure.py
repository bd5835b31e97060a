"""The measurements of `skysift bench` that run the agent's code on a workload, one child each.

Every measurement runs in a child process (:mod:`agent.bench.child`), so peak RSS is the
measured process's alone and TensorFlow is never loaded in an OpenVINO measurement. The
parent only writes the child's configuration, starts it, and reads back its result line and,
for the real agent, the rows it committed (the database is the source of truth).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from agent.bench.options import ROOT, BenchError, BenchOptions
from agent.bench.protocol import RESULT_PREFIX, T0_ENV, summarize
from agent.bench.workloads import Workload

log = logging.getLogger(__name__)


def run_child(mode: str, args: dict, log_file: Path, timeout_s: float) -> dict[str, Any]:
    """Run one measurement in its own process and return its result (plus ``wall_s``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, "-m", "agent.bench.child", mode, json.dumps(args, default=str)]
    with open(log_file, "ab") as err:
        t0 = time.time()
        env[T0_ENV] = repr(t0)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, env=env, cwd=ROOT, timeout=timeout_s)
        wall = time.time() - t0
    for line in reversed(proc.stdout.decode(errors="replace").splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            result["wall_s"] = wall
            result["t0"] = t0
            result["exit_code"] = proc.returncode
            return result
    tail = log_file.read_text(errors="replace").splitlines()[-15:]
    raise BenchError(f"{mode} measurement failed (exit {proc.returncode}); log {log_file}:\n" + "\n".join(tail))


def agent_available() -> bool:
    """Whether this checkout has the agent itself; without it only the stage runner measures."""
    return all(importlib.util.find_spec(m) is not None for m in ("agent.cli.run", "agent.service.agent", "models.factory"))


def _write_config(
    path: Path, w: Workload, storage: Path, opts: BenchOptions, cache_dir: Path | None = None
) -> Path:
    model: dict[str, Any] = {"tile_px": w.tile_px, "engine": opts.engine, "devices": list(opts.devices)}
    if cache_dir is not None:
        model["cache_dir"] = str(cache_dir)
    if opts.model_path:
        model["path"] = str(opts.model_path)
    if opts.batch_size:
        model["batch_size"] = opts.batch_size
    if opts.precision:
        model["precision"] = opts.precision
    cfg = {
        "device_id": "bench",
        # every file is complete before the run starts: no settle wait, no periodic rescan
        "source": {"folder": str(w.root), "settle_seconds": 0, "rescan_seconds": 3600},
        "storage": {"dir": str(storage), "min_free_mb": 0},
        "model": model,
        "log_level": "warning",
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _parse_ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def _db_summary(db_path: Path, t0: float) -> dict[str, Any]:
    """Throughput and latency from the rows the agent committed (the source of truth)."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT status, label, tiles, classified_at, inference_ms, total_ms, engine, device, precision FROM frames"
        ).fetchall()
    finally:
        con.close()
    if not rows:
        return {"rows": 0}
    ts = sorted(_parse_ts(r[3]) for r in rows)
    first, last = ts[0], ts[-1]
    after_first = sum(1 for t in ts if t > first)
    return {
        "rows": len(rows),
        "classified": sum(r[0] == "classified" for r in rows),
        "rejected": sum(r[0] == "rejected" for r in rows),
        "damaged": sum(r[1] == "damaged" for r in rows),
        "tiles": sum(r[2] or 0 for r in rows),
        "first_result_s": first - t0,
        "steady_s": last - first,
        # rows after the first commit, over the time they took: the rate once warm
        "steady_frames_per_s": after_first / (last - first) if last > first else None,
        "inference_ms": summarize([r[4] for r in rows if r[4] is not None]),
        "total_ms": summarize([r[5] for r in rows if r[5] is not None]),
        "engines": sorted({f"{r[6]}/{r[7]}/{r[8]}" for r in rows if r[6]}),
    }


def bench_pipeline(w: Workload, work: Path, opts: BenchOptions, run: int) -> dict[str, Any]:
    """One run of the real agent over the workload folder into a fresh database."""
    storage = work / f"storage-{w.kind}-{run}"
    shutil.rmtree(storage, ignore_errors=True)
    storage.mkdir(parents=True)
    # The compiled-model cache survives between runs as on a device: run 0 starts with an empty
    # cache (first boot), later runs restart with a warm one.
    cache = work / "ov-cache-agent"
    if run == 0:
        shutil.rmtree(cache, ignore_errors=True)
    cfg = _write_config(work / f"{w.kind}-{run}.yaml", w, storage, opts, cache)
    res = run_child("agent", {"config": str(cfg)}, work / "agent.log", opts.timeout_s)
    if res.get("rc") not in (0, None):
        raise BenchError(f"skysift run --once exited {res.get('rc')} on the {w.kind} workload (log {work / 'agent.log'})")
    db = _db_summary(storage / "skysift.db", res["t0"])
    if db.get("rows") != w.n:
        log.warning("%s: the agent committed %s rows for %d files", w.kind, db.get("rows"), w.n)
    n = db.get("rows", 0)
    out = {
        "frames": w.n,
        "model_cache_warm": run > 0,
        "wall_s": res["wall_s"],
        "frames_per_s_end_to_end": w.n / res["wall_s"],
        "peak_rss_mb": res["peak_rss_mb"],
        "tensorflow_loaded": res["tensorflow_loaded"],
        "commits": res.get("commits"),
        "first_batch": res.get("first_batch"),
        **db,
        # from the agent's own bus, more precise than the rows' millisecond timestamps
        "first_result_s": res.get("first_commit_s", db.get("first_result_s")),
        "steady_frames_per_s": res.get("steady_frames_per_s"),
        "exit_after_last_commit_s": res["wall_s"] - res["last_commit_s"] if res.get("last_commit_s") else None,
    }
    if n and res.get("cpu_s"):
        out["cpu_ms_per_frame_incl_startup"] = res["cpu_s"] * 1000 / n
    if res.get("steady_cpu_ms_per_frame"):
        # CPU time is what contention from other processes barely inflates: with the machine to
        # itself the agent would reach about cores / (CPU time per frame), if its threads keep
        # every core busy. A ceiling for comparison, not a measured rate.
        out["cpu_ms_per_frame"] = res["steady_cpu_ms_per_frame"]
        out["cpu_bound_frames_per_s"] = (os.cpu_count() or 1) * 1000 / out["cpu_ms_per_frame"]
    if res.get("thread_s") and n:
        out["pipeline_thread_ms_per_frame"] = {k: v * 1000 / n for k, v in res["thread_s"].items()}
    shutil.rmtree(storage, ignore_errors=True)
    return out


def bench_stages(w: Workload, work: Path, opts: BenchOptions) -> dict[str, Any]:
    """The agent's stages called one after another in one thread, each timed on its own."""
    storage = work / f"stages-{w.kind}"
    shutil.rmtree(storage, ignore_errors=True)
    storage.mkdir(parents=True)
    cfg = _write_config(work / f"stages-{w.kind}.yaml", w, storage, opts)
    # chunks of about 256 tiles: as many frames as fit one batch round of the classifier
    tiles_per_frame = w.meta.get("tiles_per_frame", 1)
    chunk = max(1, 256 // tiles_per_frame)
    res = run_child(
        "stages", {"config": str(cfg), "root": str(w.root), "chunk_frames": chunk}, work / "stages.log", opts.timeout_s
    )
    n = max(res["frames"], 1)
    res["stage_ms_per_frame"] = {k: v * 1000 / n for k, v in res["stage_s"].items()}
    res["frames_per_s_sequential"] = res["frames"] / res["loop_s"] if res["loop_s"] else None
    shutil.rmtree(storage, ignore_errors=True)
    return res


def bench_handbuilt(w: Workload, work: Path, opts: BenchOptions) -> dict[str, Any]:
    """The hand-built OpenVINO loop on the same files: the yardstick the agent is held to."""
    db = work / f"handbuilt-{w.kind}.db"
    for f in work.glob(f"handbuilt-{w.kind}.db*"):
        f.unlink()
    args = {
        "root": str(w.root),
        "tile_px": w.tile_px,
        "db": str(db),
        "model_path": str(opts.model_path) if opts.model_path else None,
        "batch_size": opts.batch_size or 64,
        "precision": opts.precision or "auto",
    }
    res = run_child("handbuilt", args, work / "handbuilt.log", opts.timeout_s)
    for f in work.glob(f"handbuilt-{w.kind}.db*"):
        f.unlink()
    return res


def bench_baseline(w: Workload, work: Path, opts: BenchOptions) -> dict[str, Any]:
    """The 2020 loop on an evenly spread sample of the workload (all of it would take hours)."""
    sample = opts.baseline_tiles if w.kind == "tiles" else opts.baseline_frames
    step = max(1, w.n // sample)
    files = [str(p) for p in w.files[::step][:sample]]
    args: dict[str, Any] = {"files": files}
    keras_file = _keras_model(opts.model_path)
    if keras_file:
        args["keras_model"] = str(keras_file)
    res = run_child("baseline", args, work / "baseline.log", opts.timeout_s)
    res["sample_of"] = w.n
    res["squashed_to_input"] = w.kind == "frames"
    tiles = int(w.meta.get("tiles_per_frame", 1))
    if tiles > 1:
        # The 2020 loop on the same work as skysift: one predict call per tile. Not run (it
        # would take minutes), extrapolated from the measured read and predict times.
        per_frame_ms = res["read_resize_ms"]["mean"] + tiles * res["predict_ms"]["mean"]
        res["tiled_extrapolated_frames_per_s"] = 1000 / per_frame_ms
    return res


def _keras_model(model_path: Path | None) -> Path | None:
    try:
        from models.card import load_card

        card = load_card(model_path)
        return card.path_for("keras") if card.has("keras") else None
    except Exception as exc:  # no shipped model yet: the 2020 architecture, untrained, times the same
        log.info("no Keras model from the card (%s): timing the 2020 architecture", exc)
        return None


def bench_sync(work: Path, opts: BenchOptions) -> dict[str, Any]:
    """The sync engineer's benchmark (sync/bench.py): rows/s into BigQuery and images/s into GCS
    for one flight against the emulators, and the 2020 one-call-per-image way."""
    if importlib.util.find_spec("agent.bench.sync_bench") is None:
        return {"skipped": "sync/bench.py is not in this checkout"}
    from agent.bench.sync_bench import run_sync_bench

    (work / "sync").mkdir(exist_ok=True)
    # run_sync_bench wants the shared data folder (it reads aerial-damage/*/*.png under it)
    res = run_sync_bench(n_frames=opts.sync_n, work_dir=work / "sync", data_dir=opts.data_dir.parent)
    return res if isinstance(res, dict) else {"result": res}


def bench_memory(work: Path, opts: BenchOptions) -> dict[str, Any]:
    """Peak RSS of the real agent on one 11000x10900 16-bit RGBA PNG (``model.max_decode_mb``)."""
    from agent.bench.workloads import make_big_png

    w = make_big_png(work / "big-png")
    run = bench_pipeline(w, work, opts, 0)
    return {
        "file": w.files[0].name,
        "file_mb": w.bytes_total / 1e6,
        "full_depth_mb": 11_000 * 10_900 * 4 * 2 / 1e6,
        "peak_rss_mb": run["peak_rss_mb"],
        "classified": run.get("classified"),
        "rejected": run.get("rejected"),
        "tiles": run.get("tiles"),
        "wall_s": run["wall_s"],
    }
