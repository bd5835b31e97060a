"""Per-image inference time of each engine on this machine, for `skysift bench` and the README.

Both engines are measured in the same process on the same tiles, so the figures compare like
with like: the median over many runs of one tile (latency) and of a batch divided by its size
(throughput per image). Decoding and tiling are not included: this is the model alone, as in
the 2020 figures (OpenVINO 3-6 ms, TensorFlow 66-608 ms per image).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from models.base import Classifier
from models.card import ModelCard, load_card


def _interleaved_medians(engines: list[Classifier], x: np.ndarray, runs: int) -> list[float]:
    """Median ms per image of each engine on ``x``, the engines taking turns run by run so a
    change of machine load (a shared CI box) hits all of them alike."""
    for clf in engines:
        clf.predict(x)  # warm-up: first-call allocation and tracing are start-up cost
    times: list[list[float]] = [[] for _ in engines]
    for _ in range(runs):
        for i, clf in enumerate(engines):
            t = time.perf_counter()
            clf.predict(x)
            times[i].append((time.perf_counter() - t) * 1000.0 / len(x))
    return [statistics.median(t) for t in times]


def build_engines(
    card: ModelCard, engines: list[str], cache_dir: Path | None = None
) -> list[Classifier]:
    """Classifiers to compare; ``engines`` items: ``openvino[:PRECISION]`` or ``tensorflow``."""
    out: list[Classifier] = []
    for spec in engines:
        name, _, precision = spec.partition(":")
        if name == "openvino":
            from models.openvino_engine import OpenVinoClassifier

            out.append(OpenVinoClassifier(card, "CPU", precision or "auto", cache_dir))
        elif name == "tensorflow":
            from models.tensorflow_engine import TensorFlowClassifier

            out.append(TensorFlowClassifier(card))
        else:
            raise ValueError(f"unknown engine {spec!r}")
    return out


def engine_latency(
    tiles: np.ndarray,
    engines: list[str] | None = None,
    *,
    card: ModelCard | None = None,
    batch_size: int = 64,
    runs: int = 200,
    batch_runs: int = 20,
    cache_dir: Path | None = None,
) -> list[dict]:
    """Median ms per image for each engine: batch of 1 and batches of ``batch_size``.

    ``tiles`` are uint8 (N, input, input); returns one dict per engine with ``engine``,
    ``device``, ``precision``, ``batch1_ms``, ``batched_ms``, ``batch_size``, ``runs``.
    """
    card = card or load_card()
    engines = engines or ["openvino:auto", "openvino:f32", "tensorflow"]
    idx = np.arange(batch_size) % len(tiles)
    batch = np.ascontiguousarray(tiles[idx])
    one = np.ascontiguousarray(tiles[:1])
    built = build_engines(card, engines, cache_dir)
    try:
        single = _interleaved_medians(built, one, runs)
        batched = _interleaved_medians(built, batch, batch_runs)
    finally:
        for clf in built:
            clf.close()
    rows = []
    for clf, b1, bn in zip(built, single, batched, strict=True):
        rows.append(
            {
                "engine": clf.engine,
                "device": clf.device,
                "precision": clf.precision,
                "batch1_ms": round(b1, 3),
                "batched_ms": round(bn, 3),
                "batch_size": batch_size,
                "runs": runs,
                "batch_runs": batch_runs,
            }
        )
    return rows


def main() -> None:  # pragma: no cover - `python -m models.microbench [TILE_DIR]`
    import json
    import sys

    import cv2

    base = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/data/aerial-damage"
    paths = sorted(base.rglob("*.png"))
    tiles = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths])
    for row in engine_latency(tiles):
        print(json.dumps(row))


if __name__ == "__main__":  # pragma: no cover
    main()
