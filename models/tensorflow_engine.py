"""The TensorFlow engine: the card's ``.keras`` model behind a batched ``tf.function``.

The fallback when OpenVINO cannot run. ``import tensorflow`` costs seconds and hundreds of MB,
so only this module imports it, and the factory imports this module only when TensorFlow is
chosen or fallen back to. ``model.predict`` per image costs ~50 ms of Python overhead a call;
a ``tf.function`` with a fixed input signature traces once and then runs any batch size.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from agent.core.errors import EngineUnavailable, InferenceError, ModelError
from models.base import Classifier
from models.card import ModelCard

log = logging.getLogger(__name__)


class TensorFlowClassifier(Classifier):
    engine = "tensorflow"
    device = "CPU"
    precision = "f32"

    def __init__(self, card: ModelCard):
        self.card = card
        self.input_px = card.input_px
        path = card.path_for("keras")  # verifies the sha256 first
        # TF's C++ banner lines are noise in a service journal.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import keras
            import tensorflow as tf
        except ImportError as exc:
            raise EngineUnavailable(
                f"TensorFlow is not installed ({exc.name}); install skysift[tensorflow]"
            ) from exc
        try:
            self._model = keras.models.load_model(str(path), compile=False)
        except Exception as exc:
            raise ModelError(f"{path}: Keras cannot load the model: {exc}") from exc
        gpus = tf.config.list_logical_devices("GPU")
        self.device = "GPU" if gpus else "CPU"
        px, ch, scale = self.input_px, card.channels, card.scale
        model = self._model

        @tf.function(input_signature=[tf.TensorSpec([None, px, px, ch], tf.uint8)], reduce_retracing=True)
        def infer(x):
            return model(tf.cast(x, tf.float32) * scale, training=False)

        self._infer = infer
        self._tf = tf

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(tiles, dtype=np.uint8).reshape(len(tiles), self.input_px, self.input_px, 1)
        try:
            out = self._infer(self._tf.constant(x)).numpy()
        except Exception as exc:
            raise InferenceError(f"TensorFlow inference failed: {exc}") from exc
        p = np.asarray(out, dtype=np.float32).reshape(-1)
        return (1.0 - p) if self.card.output_is_p_undamaged else p

    def close(self) -> None:
        self._model = None
        self._infer = None
