"""The Classifier interface every inference engine implements, and the frame result type.

An engine classifies *tiles*: uint8 grayscale arrays of the model's input size (128x128 for
the shipped model). Cutting frames into tiles, batching and the frame decision live in
:mod:`models.frame`, so every engine gets the same behaviour for free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


class Classifier(ABC):
    """One inference engine bound to one model and one device.

    Implementations raise :class:`agent.core.errors.EngineUnavailable` from their constructor when
    they cannot run here, and :class:`agent.core.errors.InferenceError` from :meth:`predict` when
    a compiled model fails at run time (the caller may then fall back to another engine).
    """

    #: ``openvino`` or ``tensorflow``
    engine: str
    #: the device actually used, e.g. ``CPU``, ``GPU.0``
    device: str
    #: the precision actually used for inference, e.g. ``f32``, ``bf16``, ``int8``
    precision: str
    #: side of the square input, in pixels
    input_px: int

    @abstractmethod
    def predict(self, tiles: np.ndarray) -> np.ndarray:
        """Return p(damaged) in [0, 1], float32 of shape (N,), for uint8 tiles (N, H, W)."""

    def predict_async(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Classify several batches, overlapping them where the engine can. Default: in turn."""
        return [self.predict(b) for b in batches]

    def start(self, batches: list[np.ndarray]) -> Callable[[], list[np.ndarray]]:
        """Start classifying ``batches`` and return a function that waits for their results.

        Engines that run on their own threads (OpenVINO) return at once, so the caller can
        prepare and start the next batches while these run: the device never waits for Python
        between two calls. Default: classify now, return the results when asked.
        """
        out = self.predict_async(batches)
        return lambda: out

    def close(self) -> None:  # noqa: B027 - optional hook, most engines hold nothing to release
        """Release device resources."""

    def describe(self) -> dict:
        return {"engine": self.engine, "device": self.device, "precision": self.precision}


@dataclass
class FrameResult:
    """The classification of one frame (one image), possibly made of many tiles."""

    label: str  # "damaged" | "undamaged"
    p_damaged: float  # the highest tile probability: the frame holds damage somewhere
    tiles: int
    damaged_tiles: int
    grid: list[list[float]]  # p_damaged per tile, row-major, grid[row][col]
    tile_px: int  # tile side in pixels of the *original* frame
    width: int
    height: int
    engine: str
    device: str
    precision: str
    inference_ms: float
    extra: dict = field(default_factory=dict)

    @property
    def damaged_fraction(self) -> float:
        return self.damaged_tiles / self.tiles if self.tiles else 0.0
