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


def _median_ms(fn, x: np.ndarray, runs: int, per: int) -> float:
    fn(x)  # warm-up: first-call allocation and tracing are start-up cost, not per image
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t) * 1000.0 / per)
    return statistics.median(times)


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
    rows = []
    for clf in build_engines(card, engines, cache_dir):
        try:
            rows.append(
                {
                    "engine": clf.engine,
                    "device": clf.device,
                    "precision": clf.precision,
                    "batch1_ms": round(_median_ms(clf.predict, one, runs, 1), 3),
                    "batched_ms": round(_median_ms(clf.predict, batch, batch_runs, batch_size), 3),
                    "batch_size": batch_size,
                    "runs": runs,
                }
            )
        finally:
            clf.close()
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
