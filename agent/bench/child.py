"""The measuring side of `skysift bench`: each measurement runs in a process of its own.

``python -m agent.bench.child MODE ARGS_JSON`` runs one measurement and prints one line
``SKYSIFT-BENCH {json}`` on stdout. A process of its own gives each measurement an honest peak
RSS (``VmHWM`` of this process only: no orchestrator pages, no TensorFlow loaded by another
measurement) and a true cold start. Modes:

- ``agent``: the real agent, ``skysift -c CONFIG run --once``, in this process.
- ``stages``: the pipeline's own stages called one after another on the same folder
  (discover, read and decode, classify, geotag, commit), timed separately: where the time goes.
- ``engine``: per-image inference time of one engine/device/precision on the shared tiles.
- ``baseline``: the 2020 loop (``cv2.imread``, ``cv2.resize``, Keras ``model.predict`` per image).

Only the standard library is imported at module level, so the cold start measured is the
agent's own.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from agent.bench.protocol import T0_ENV, cpu_s, emit, since_spawn_s, summarize

# --- agent -------------------------------------------------------------------------------------

def mode_agent(args: dict) -> None:
    """``skysift run --once`` in this process, through :class:`agent.service.agent.Agent` as the command
    does, with a listener on the agent's event bus timing every commit."""
    import threading

    from agent.core.config import load_config
    from agent.service.agent import Agent

    cfg = load_config(args["config"])
    agent = Agent(cfg)
    commits: list[tuple[float, int, float]] = []  # (wall-clock time, rows, process CPU s)
    lock = threading.Lock()

    def on_commit(rows: list, **_: Any) -> None:
        with lock:  # only hands off: the commit thread must not wait on the benchmark
            commits.append((time.time(), len(rows), cpu_s()))

    agent.ctx.bus.subscribe("frames_committed", on_commit)
    t, c = time.perf_counter(), cpu_s()
    rc = agent.run(once=True)
    run_s = time.perf_counter() - t
    run_cpu_s = cpu_s() - c
    t0 = float(os.environ.get(T0_ENV, "0") or 0)
    out: dict[str, Any] = {"rc": rc, "run_s": run_s, "run_cpu_s": run_cpu_s, "commits": len(commits)}
    if commits:
        first, last = commits[0][0], commits[-1][0]
        n_after = sum(c[1] for c in commits[1:])
        out["committed"] = sum(c[1] for c in commits)
        if n_after:
            # CPU time per frame once warm: contention from other processes barely inflates it
            out["steady_cpu_ms_per_frame"] = (commits[-1][2] - commits[0][2]) * 1000 / n_after
        out["first_commit_s"] = first - t0 if t0 else None
        out["last_commit_s"] = last - t0 if t0 else None
        out["first_batch"] = commits[0][1]
        # frames committed after the first commit, over the time they took: the warm rate
        out["steady_frames_per_s"] = n_after / (last - first) if last > first and n_after else None
    timings = getattr(agent.pipeline, "timings", None)
    if timings:
        out["thread_s"] = dict(timings)
    out["duplicates"] = getattr(agent.pipeline, "duplicates", None)
    emit(out)


# --- stages ------------------------------------------------------------------------------------

def mode_stages(args: dict) -> None:
    """The agent's own stages (folder discovery, reader, decoder, classifier stage, committer)
    called one after another on the same folder, each timed: where the time goes."""
    t_start = time.perf_counter()
    import threading

    from agent import ingest
    from agent.core.config import load_config
    from agent.core.events import EventBus
    from agent.core.runtime import AgentContext, Stats
    from agent.store.db import Store
    from drivers.folder import FolderSource
    from models.factory import create_frame_classifier

    cfg = load_config(args["config"])
    chunk = int(args.get("chunk_frames", 64))
    t_import = time.perf_counter() - t_start

    t = time.perf_counter()
    clf = create_frame_classifier(cfg.model, cfg.model.cache_dir or cfg.storage.dir / "ov-cache")
    t_compile = time.perf_counter() - t
    ctx = AgentContext(cfg=cfg, bus=EventBus(), stats=Stats(), stop=threading.Event())
    counts = ingest.Counts()
    reader = ingest.Reader(cfg.model.max_file_mb, counts)
    locator = ingest.Locator(cfg)  # the frames carry a DJI pose: the geometry is really run
    decoder = ingest.Decoder(cfg.model, clf.input_px, cfg.geotag.camera_timezone, counts, locator)
    classifier = ingest.ClassifierStage(clf, counts)
    flights = ingest.FlightTracker(ctx, cfg.db_path)
    committer = ingest.Committer(ctx, flights, ingest.SpaceGuard(ctx), ingest.InFlight(), counts)
    store = Store(cfg.db_path)

    stage = dict.fromkeys(("discover", "read_decode", "locate", "classify", "geotag", "commit"), 0.0)
    t = time.perf_counter()
    source = FolderSource(args["root"], settle_seconds=0.0, use_watcher=False)
    frames = list(source.frames(ctx.stop, once=True))
    stage["discover"] = time.perf_counter() - t

    first_result_s = None
    committed: list[dict[str, Any]] = []
    t_loop = time.perf_counter()
    for i in range(0, len(frames), chunk):
        t = time.perf_counter()
        jobs = [reader.read(f) for f in frames[i : i + chunk]]
        for job in jobs:
            if job.reject is None:
                decoder.decode(job)
        stage["read_decode"] += time.perf_counter() - t
        t = time.perf_counter()
        classifier.classify(jobs)
        stage["classify"] += time.perf_counter() - t
        committed += committer.process(store, jobs)  # times its row building as "geotag"
        if first_result_s is None:
            first_result_s = since_spawn_s()
    loop_s = time.perf_counter() - t_loop
    stage["geotag"], stage["commit"] = counts.timings["geotag"], counts.timings["commit"]
    stage["locate"] = counts.timings["locate"]  # timed inside decode(): its own line, not twice
    stage["read_decode"] -= stage["locate"]
    classified = [r for r in committed if r["status"] == "classified"]
    emit(
        {
            "frames": len(frames),
            "classified": len(classified),
            "rejected": len(committed) - len(classified),
            "damaged": sum(r["label"] == "damaged" for r in classified),
            "tiles": sum(r["tiles"] for r in classified),
            "rows_in_db": store.count_frames(),
            "import_s": t_import, "compile_s": t_compile, "first_result_s": first_result_s,
            "loop_s": loop_s, "stage_s": stage, "chunk_frames": chunk,
            "engine": clf.engine, "device": clf.device, "precision": clf.precision,
        }
    )
    store.close()
    clf.close()


# --- engine ------------------------------------------------------------------------------------

def tile_predictor(clf: Any):
    """A function uint8 (N, H, W) -> p_damaged for a FrameClassifier: its engine's ``predict``
    when it exposes the engine, else ``classify`` on one-tile frames."""
    for name in ("classifier", "engine_impl", "_classifier", "_engine", "_clf"):
        inner = getattr(clf, name, None)
        if inner is not None and callable(getattr(inner, "predict", None)):
            return inner.predict, f"{type(inner).__name__}.predict"
    from agent.imaging.decode import DecodedImage, ExifInfo

    def predict(tiles):
        images = [
            DecodedImage(
                gray=t, width=t.shape[1], height=t.shape[0], scale=1.0, format="png",
                sha256="0" * 64, bytes=t.size, exif=ExifInfo(None, None, None, None, None),
            )
            for t in tiles
        ]
        return [r.p_damaged for r in clf.classify(images)]

    return predict, "FrameClassifier.classify"


def load_tiles(data_dir: Path):
    import cv2
    import numpy as np

    paths = sorted((data_dir / "damaged").glob("*.png")) + sorted((data_dir / "undamaged").glob("*.png"))
    return np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths])


def mode_engine(args: dict) -> None:
    t_start = time.perf_counter()
    from agent.core.config import ModelConfig
    from models.factory import create_frame_classifier

    mc = ModelConfig(
        path=args.get("model_path"),
        engine=args["engine"],
        devices=[args["device"]] if args.get("device") else ["CPU"],
        precision=args.get("precision", "auto"),
        batch_size=int(args.get("batch_size", 64)),
    )
    clf = create_frame_classifier(mc, Path(args["cache_dir"]))
    compile_s = time.perf_counter() - t_start
    predict, via = tile_predictor(clf)
    tiles = load_tiles(Path(args["data_dir"]))
    t = time.perf_counter()
    predict(tiles[:1])
    first_ms = (time.perf_counter() - t) * 1000

    repeats = int(args.get("repeats", 400))
    single = []
    for i in range(repeats):
        x = tiles[i % len(tiles)][None]
        t = time.perf_counter()
        predict(x)
        single.append((time.perf_counter() - t) * 1000)

    bs = int(args.get("batch_size", 64))
    batched = []
    rounds = max(3, int(args.get("batch_rounds", 20)))
    for r in range(rounds):
        idx = [(r * bs + j) % len(tiles) for j in range(bs)]
        x = tiles[idx]
        t = time.perf_counter()
        predict(x)
        batched.append((time.perf_counter() - t) * 1000 / bs)
    b = summarize(batched)
    emit(
        {
            "engine": clf.engine,
            "device": clf.device,
            "precision": clf.precision,
            "requested": {k: args.get(k) for k in ("engine", "device", "precision")},
            "via": via,
            "startup_s": compile_s,
            "first_inference_ms": first_ms,
            "batch1_ms": summarize(single),
            "batch_size": bs,
            "batched_ms_per_image": b,
            "batched_images_per_s": 1000 / b["mean"] if b.get("mean") else None,
        }
    )
    clf.close()


# --- hand-built reference ----------------------------------------------------------------------

def mode_handbuilt(args: dict) -> None:
    """The shortest fast pipeline one would write by hand: see :mod:`agent.bench.handbuilt`."""
    from agent.bench.handbuilt import run

    run(args)


# --- the 2020 baseline -------------------------------------------------------------------------

def build_2020_model(input_px: int = 128):
    """The 2020 architecture (untrained): timing does not depend on the weights."""
    import keras
    from keras import layers

    m = keras.Sequential([keras.Input((input_px, input_px, 1))])
    for _ in range(3):
        m.add(layers.Conv2D(64, (3, 3), activation="relu"))
        m.add(layers.MaxPooling2D((3, 3)))
        m.add(layers.Dropout(0.5))
    m.add(layers.Conv2D(64, (3, 3), activation="relu"))
    m.add(layers.Flatten())
    m.add(layers.Dense(64))
    m.add(layers.Dense(1, activation="sigmoid"))
    return m


def mode_baseline(args: dict) -> None:
    """Read, resize, ``model.predict`` one image at a time, as the 2020 project's loop did.

    A large frame is squashed to the model's input (the 2020 code did not tile); the rate is
    per frame, measured on a sample of the workload.
    """
    t_start = time.perf_counter()
    import cv2
    import keras
    import numpy as np

    model_file = args.get("keras_model")
    if model_file:
        model = keras.models.load_model(model_file, compile=False)
        model_desc = Path(model_file).name
    else:
        model = build_2020_model()
        model_desc = "2020 architecture (untrained weights; timing only)"
    px = int(model.input_shape[1])
    startup_s = time.perf_counter() - t_start
    files = [Path(p) for p in args["files"]]
    read_ms, predict_ms, total_ms = [], [], []
    # one warm-up call: Keras traces the predict function on its first call
    model.predict(np.zeros((1, px, px, 1), np.float32), verbose=0)
    t_loop = time.perf_counter()
    for path in files:
        t0 = time.perf_counter()
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        img = cv2.resize(img, (px, px))
        x = img.reshape(1, px, px, 1).astype(np.float32) / 255.0
        t1 = time.perf_counter()
        model.predict(x, verbose=0)
        t2 = time.perf_counter()
        read_ms.append((t1 - t0) * 1000)
        predict_ms.append((t2 - t1) * 1000)
        total_ms.append((t2 - t0) * 1000)
    loop_s = time.perf_counter() - t_loop
    emit(
        {
            "model": model_desc,
            "frames": len(files),
            "startup_s": startup_s,
            "loop_s": loop_s,
            "frames_per_s": len(files) / loop_s if loop_s else None,
            "read_resize_ms": summarize(read_ms),
            "predict_ms": summarize(predict_ms),
            "total_ms": summarize(total_ms),
        }
    )


MODES = {
    "agent": mode_agent,
    "stages": mode_stages,
    "engine": mode_engine,
    "baseline": mode_baseline,
    "handbuilt": mode_handbuilt,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in MODES:
        print(f"usage: python -m agent.bench.child {{{','.join(MODES)}}} ARGS_JSON", file=sys.stderr)
        return 2
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    MODES[argv[0]](json.loads(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
