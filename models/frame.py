"""From decoded frames to frame results: tiling, batching, the frame decision, engine fallback.

Tiling. The model sees ``input_px`` (128) square tiles. A frame is never squashed to 128x128,
which would destroy the detail the model needs: it is cut into a grid of tiles of
``model.tile_px`` pixels of the ORIGINAL frame, each resized to the model input with INTER_AREA.
Edges are explicit, and no pixel is invented:

- along each axis, ``ceil(L / tile)`` tiles; the last row/column is shifted inward so it ends
  exactly at the image edge (it overlaps its neighbour instead of being padded);
- a side shorter than one tile gives one tile spanning that whole side (an image smaller than
  a tile is one tile, resized to the input: its aspect ratio is not kept);
- a 128x128 image with ``tile_px: 128`` is exactly one tile, passed through untouched.

When the JPEG was decoded at reduced size (``DecodedImage.scale < 1``), a tile is
``tile_px * scale`` decoded pixels: the same part of the scene.

Decision. A tile is damaged when the model says so at the card's threshold (for the 2020
convention, output p_undamaged < threshold; training tunes it out of fold, and the calibration
is folded into the model, so every engine returns the same calibrated p). A frame is damaged when the fraction of damaged tiles is
more than ``model.damaged_fraction`` (default 0: any damaged tile). Its ``p_damaged`` is the
highest tile probability.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from agent.core.errors import EngineUnavailable, InferenceError
from agent.imaging.decode import DecodedImage
from models.base import Classifier, FrameResult
from models.card import ModelCard

log = logging.getLogger(__name__)


def tile_starts(length: int, tile: int) -> list[int]:
    """Start offsets along one axis; the last tile is shifted inward to end at the edge."""
    if length <= tile:
        return [0]
    n = math.ceil(length / tile)
    return [i * tile for i in range(n - 1)] + [length - tile]


def cut_tiles(gray: np.ndarray, tile: int, input_px: int) -> tuple[np.ndarray, int, int]:
    """Cut ``gray`` into (rows*cols, input_px, input_px) uint8 tiles of side ``tile`` pixels."""
    h, w = gray.shape[:2]
    ys, xs = tile_starts(h, tile), tile_starts(w, tile)
    th, tw = min(tile, h), min(tile, w)
    out = np.empty((len(ys) * len(xs), input_px, input_px), dtype=np.uint8)
    i = 0
    for y in ys:
        for x in xs:
            region = gray[y : y + th, x : x + tw]
            if region.shape == (input_px, input_px):
                out[i] = region
            else:
                # INTER_AREA averages when shrinking (no aliasing); it interpolates when enlarging.
                interp = cv2.INTER_AREA if th >= input_px and tw >= input_px else cv2.INTER_LINEAR
                out[i] = cv2.resize(region, (input_px, input_px), interpolation=interp)
            i += 1
    return out, len(ys), len(xs)


@dataclass
class EngineCandidate:
    """One way to run the model (an engine on a device), built only when needed."""

    name: str  # e.g. "openvino/GPU", "tensorflow/CPU"
    build: Callable[[], Classifier]


class FrameClassifier:
    """Classifies whole frames with the first engine that works, falling back at run time.

    ``candidates`` is the priority list made by :func:`models.factory.create_frame_classifier`:
    the OpenVINO devices of ``model.devices`` that exist here, then TensorFlow when
    ``model.engine`` is ``auto``. A candidate that fails to build is skipped; one that fails at
    inference (:class:`InferenceError`) is replaced by the next, the batch is re-run, and
    ``engine_fallback`` is published on the bus. Thread-safe (one inference at a time).
    """

    def __init__(
        self,
        card: ModelCard,
        candidates: list[EngineCandidate],
        *,
        tile_px: int = 128,
        batch_size: int = 64,
        damaged_fraction: float = 0.0,
        bus=None,
        unavailable: list[str] | None = None,
    ):
        """``unavailable``: why preferred engines were left out before any was tried (e.g.
        OpenVINO cannot be imported); activating a later one then counts as a fallback."""
        self.card = card
        self.tile_px = tile_px
        self.batch_size = batch_size
        self.damaged_fraction = damaged_fraction
        self._bus = bus
        self._pending = list(candidates)
        self._lock = threading.Lock()
        self._active: Classifier | None = None
        self._active_name = ""
        self.fallbacks: list[dict] = []
        self._model_sha256: str | None = None
        self._last_done = 0.0  # perf_counter when the last collected batch's results came
        self._activate_next(reason="; ".join(unavailable) if unavailable else None, previous=unavailable[0].split(":")[0] if unavailable else None)

    # ---------------------------------------------------------------- engine selection

    def _activate_next(self, reason: str | None, previous: str | None = None) -> None:
        previous = self._active_name or previous
        if self._active is not None:
            try:
                self._active.close()
            except Exception:  # closing a failed device must not stop the fallback
                log.debug("closing %s failed", previous, exc_info=True)
            self._active = None
        errors = [reason] if reason else []
        while self._pending:
            cand = self._pending.pop(0)
            try:
                clf = cand.build()
            except EngineUnavailable as exc:
                log.warning("engine %s unavailable: %s", cand.name, exc)
                errors.append(f"{cand.name}: {exc}")
                continue
            self._active, self._active_name = clf, cand.name
            if previous or errors:
                why = "; ".join(e for e in errors if e) or "unavailable"
                log.warning("falling back to %s (%s/%s) because: %s", cand.name, clf.engine, clf.device, why)
                event = {"from": previous or "(none)", "to": cand.name, "reason": why}
                self.fallbacks.append(event)
                if self._bus is not None:
                    self._bus.publish("engine_fallback", **event)
            log.info(
                "classifier: engine=%s device=%s precision=%s input=%dpx tile=%dpx batch=%d",
                clf.engine, clf.device, clf.precision, clf.input_px, self.tile_px, self.batch_size,
            )
            return
        raise EngineUnavailable(
            "no inference engine can run here: " + ("; ".join(errors) or "no engine configured")
        )

    @property
    def classifier(self) -> Classifier:
        assert self._active is not None
        return self._active

    @property
    def engine(self) -> str:
        return self.classifier.engine

    @property
    def device(self) -> str:
        return self.classifier.device

    @property
    def precision(self) -> str:
        return self.classifier.precision

    @property
    def input_px(self) -> int:
        return self.card.input_px

    @property
    def model_sha256(self) -> str:
        if self._model_sha256 is None:
            self._model_sha256 = self.card.sha256
        return self._model_sha256

    def close(self) -> None:
        with self._lock:
            if self._active is not None:
                self._active.close()

    # -------------------------------------------------------------------- inference

    def is_damaged(self, p_damaged: np.ndarray) -> np.ndarray:
        """Per-tile decision at the card's threshold (:meth:`ModelCard.is_damaged`)."""
        return self.card.is_damaged(p_damaged)

    def predict_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """p(damaged) for (N, input, input) uint8 tiles, in batches, with run-time fallback."""
        with self._lock:
            return self._predict_locked(tiles)

    def _predict_locked(self, tiles: np.ndarray) -> np.ndarray:
        if len(tiles) == 0:
            return np.zeros(0, dtype=np.float32)
        batches = [tiles[i : i + self.batch_size] for i in range(0, len(tiles), self.batch_size)]
        while True:
            clf = self.classifier
            try:
                parts = clf.predict_async(batches) if len(batches) > 1 else [clf.predict(batches[0])]
                return np.concatenate(parts).astype(np.float32, copy=False)
            except InferenceError as exc:
                log.error("inference failed on %s: %s", self._active_name, exc)
                if not self._pending:
                    raise
                self._activate_next(reason=f"{self._active_name}: {exc}")

    def classify(self, images: list[DecodedImage]) -> list[FrameResult]:
        """Classify frames: all their tiles go through the model together, in batches."""
        return self.collect(self.submit(images))

    def submit(self, images: list[DecodedImage]) -> PendingFrames:
        """Cut the frames into tiles and start their inference; :meth:`collect` the results.

        Submitting the next frames before collecting these keeps an engine that runs on its own
        threads (OpenVINO) busy while Python builds results and cuts tiles: on 128 px tiles that
        gap cost a quarter of the inference throughput (skysift bench).
        """
        cut = []
        for img in images:
            tile = max(1, round(self.tile_px * img.scale))
            cut.append(cut_tiles(img.gray, tile, self.input_px))
        if not cut:
            tiles = np.zeros((0, self.input_px, self.input_px), np.uint8)
        else:
            tiles = np.concatenate([c[0] for c in cut]) if len(cut) > 1 else cut[0][0]
        pending = PendingFrames(images, cut, tiles, t0=time.perf_counter())
        if len(tiles):
            batches = [tiles[i : i + self.batch_size] for i in range(0, len(tiles), self.batch_size)]
            with self._lock:
                pending.engine = self.classifier
                try:
                    pending.wait = pending.engine.start(batches)
                except InferenceError as exc:
                    pending.error = exc
        return pending

    def collect(self, pending: PendingFrames) -> list[FrameResult]:
        """The results of :meth:`submit`; on an engine failure, falls back and runs them again."""
        images, cut, tiles = pending.images, pending.cut, pending.tiles
        if not images:
            return []
        p: np.ndarray | None = None
        clf = pending.engine
        if pending.wait is not None and pending.error is None:
            try:
                p = np.concatenate(pending.wait()).astype(np.float32, copy=False)
            except InferenceError as exc:
                pending.error = exc
        if p is None:
            with self._lock:
                if pending.error is not None and self._active is pending.engine:
                    log.error("inference failed on %s: %s", self._active_name, pending.error)
                    if not self._pending:
                        raise pending.error
                    self._activate_next(reason=f"{self._active_name}: {pending.error}")
                p = self._predict_locked(tiles)  # on whichever engine is active now
                clf = self.classifier
        assert clf is not None
        # The engine's time for this batch: from when it could start on it (its submission, or
        # the end of the batch before it, which it queued behind) to its results.
        done = time.perf_counter()
        elapsed_ms = (done - max(pending.t0, self._last_done)) * 1000.0
        self._last_done = done
        damaged = self.is_damaged(p)
        results: list[FrameResult] = []
        at = 0
        for img, (t, rows, cols) in zip(images, cut, strict=True):
            n = len(t)
            fp, fd = p[at : at + n], damaged[at : at + n]
            at += n
            n_damaged = int(fd.sum())
            results.append(
                FrameResult(
                    label="damaged" if n_damaged / n > self.damaged_fraction else "undamaged",
                    p_damaged=float(fp.max()),
                    tiles=n,
                    damaged_tiles=n_damaged,
                    grid=[[round(float(v), 5) for v in fp[r * cols : (r + 1) * cols]] for r in range(rows)],
                    tile_px=self.tile_px,
                    width=img.width,
                    height=img.height,
                    engine=clf.engine,
                    device=clf.device,
                    precision=clf.precision,
                    # the batch's time shared out by tile count: frames are classified together
                    inference_ms=elapsed_ms * n / len(tiles),
                    extra={"rows": rows, "cols": cols, "decode_scale": img.scale},
                )
            )
        return results


@dataclass
class PendingFrames:
    """Frames whose tiles are being classified (:meth:`FrameClassifier.submit`)."""

    images: list[DecodedImage]
    cut: list[tuple[np.ndarray, int, int]]
    tiles: np.ndarray
    t0: float
    engine: Classifier | None = None
    wait: Callable[[], list[np.ndarray]] | None = None
    error: InferenceError | None = None
