"""The TensorFlow engine: the card's ``.keras`` model behind a batched ``tf.function``.

The fallback when OpenVINO cannot run. ``import tensorflow`` costs seconds and hundreds of MB,
so only this module imports it, and the factory imports this module only when TensorFlow is
chosen or fallen back to. ``model.predict`` per image costs ~50 ms of Python overhead a call;
a ``tf.function`` with a fixed input signature traces once and then runs any batch size.
It makes of the gray u8 tiles what the model takes exactly as the OpenVINO graph does (scale,
gray replicated for an RGB model, bilinear resize to the input size, NCHW transpose), so both
engines give the same output. A model the card says TensorFlow cannot run (ONNX) never gets here
(:func:`models.factory.create_frame_classifier`).
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
        px, ch, scale, nchw = self.input_px, card.channels, card.scale, card.layout == "NCHW"
        model = self._model

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1], tf.uint8)], reduce_retracing=True)
        def infer(x):
            x = tf.cast(x, tf.float32) * scale
            if ch == 3:
                x = tf.concat([x, x, x], axis=3)
            # bilinear with half-pixel centers and no antialiasing: OpenVINO's RESIZE_LINEAR,
            # and an identity for tiles already of the input size
            x = tf.image.resize(x, (px, px), method="bilinear")
            if nchw:
                x = tf.transpose(x, (0, 3, 1, 2))
            return model(x, training=False)

        self._infer = infer
        self._tf = tf

    def predict(self, tiles: np.ndarray) -> np.ndarray:
        n, h, w = tiles.shape[:3]
        x = np.ascontiguousarray(tiles, dtype=np.uint8).reshape(n, h, w, 1)
        try:
            out = self._infer(self._tf.constant(x)).numpy()
        except Exception as exc:
            raise InferenceError(f"TensorFlow inference failed: {exc}") from exc
        return self.card.p_damaged(out, n)

    def close(self) -> None:
        self._model = None
        self._infer = None
