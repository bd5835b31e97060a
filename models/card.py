"""The model card: what a model expects, how good it is, and the hashes that pin its files.

``model_card.json`` sits beside the model files. Engines load a model only through
:func:`load_card`, which refuses files whose sha256 differs from the card: a half-copied or
tampered model must not silently classify disaster imagery.

Card fields used by the engines::

    {
      "name": "skysift-damage-cnn", "version": "1",
      "input": {"height": 128, "width": 128, "channels": 1, "layout": "NHWC",
                "dtype": "float32", "scale": 0.00392156862745098},   # u8 * scale
      "output": {"kind": "sigmoid", "meaning": "p_undamaged"},  # 2020: sigmoid >= 0.5 is undamaged
      "labels": {"0": "damaged", "1": "undamaged"},
      "threshold": 0.5,   # on the output; training tunes it out of fold (metrics.calibration)
      "engines": ["openvino", "tensorflow"],    # which engines can run it (default: from files)
      "files": {"keras": "model.keras", "openvino": "model.xml", "openvino_int8": "model-int8.xml"},
      "sha256": {"model.keras": "...", "model.xml": "...", "model.bin": "...", ...},
      "metrics": {...}, "training": {...}, "versions": {...}
    }

``files`` maps a *kind* to the file an engine opens; an IR's ``.bin`` is hashed too.

A softmax model says ``"output": {"kind": "softmax", "classes": 4}`` with one label per class
and ``"damaged_classes": [0, 2]``: p(damaged) is the sum of those classes' probabilities.
``input.channels`` is 1 or 3 (gray tiles are replicated for RGB models) and ``input.layout``
``NHWC`` or ``NCHW`` (ONNX models exported from PyTorch).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.errors import ModelError, ModelIntegrityError

CARD_NAME = "model_card.json"
#: the engine that can open each kind of file of ``files``
_ENGINE_OF_FILE = {"openvino": "openvino", "openvino_int8": "openvino", "keras": "tensorflow"}
#: the model skysift ships, trained by `skysift model train` on ../shared/data/aerial-damage
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "damage-cnn"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class ModelCard:
    dir: Path
    data: dict[str, Any]

    @property
    def input_px(self) -> int:
        return int(self.data["input"]["height"])

    @property
    def channels(self) -> int:
        return int(self.data["input"].get("channels", 1))

    @property
    def scale(self) -> float:
        return float(self.data["input"].get("scale", 1 / 255))

    @property
    def threshold(self) -> float:
        return float(self.data.get("threshold", 0.5))

    @property
    def layout(self) -> str:
        """``NHWC`` (Keras, the default) or ``NCHW`` (PyTorch-exported ONNX)."""
        return str(self.data["input"].get("layout", "NHWC"))

    @property
    def output_kind(self) -> str:
        """``sigmoid`` (one probability per tile) or ``softmax`` (one per class)."""
        return str(self.data.get("output", {}).get("kind", "sigmoid"))

    @property
    def classes(self) -> int:
        """Width of the model output: 1 for a sigmoid, the class count for a softmax."""
        return int(self.data.get("output", {}).get("classes", 1)) if self.output_kind == "softmax" else 1

    @property
    def damaged_classes(self) -> list[int]:
        return [int(i) for i in self.data.get("damaged_classes", [])]

    @property
    def output_is_p_undamaged(self) -> bool:
        if self.output_kind == "softmax":
            return False  # p_damaged() already sums the damaged classes
        return self.data.get("output", {}).get("meaning", "p_undamaged") == "p_undamaged"

    @property
    def engines(self) -> list[str]:
        """The engines that can run this model. Cards older than the field say it through
        their files: an IR for OpenVINO, a ``.keras`` file for TensorFlow."""
        if "engines" in self.data:
            return [str(e) for e in self.data["engines"]]
        found = (_ENGINE_OF_FILE.get(kind) for kind in self.data.get("files", {}))
        return list(dict.fromkeys(e for e in found if e))

    def supports(self, engine: str) -> bool:
        return engine in self.engines

    def p_damaged(self, out: np.ndarray, n: int) -> np.ndarray:
        """p(damaged), float32 (n,), from the model's raw output for ``n`` tiles: a sigmoid
        read as ``output.meaning`` says, or the sum of the damaged classes of a softmax.

        Rows stay rows: a (n, C) softmax is summed per tile, never flattened across tiles.
        """
        if self.output_kind == "softmax":
            probs = np.asarray(out, dtype=np.float32).reshape(n, self.classes)
            return probs[:, self.damaged_classes].sum(axis=1, dtype=np.float32)
        p = np.asarray(out, dtype=np.float32).reshape(n)
        return (1.0 - p) if self.output_is_p_undamaged else p

    @property
    def sha256(self) -> str:
        """One hash for the whole model: the card file's own sha256 (it pins every file)."""
        return sha256_file(self.dir / CARD_NAME)

    def has(self, kind: str) -> bool:
        return kind in self.data.get("files", {})

    @property
    def int8_verified(self) -> bool:
        """True when the card ships an INT8 IR that training measured as reproducing the float
        one (:attr:`int8_unverified_reason` is None). Only then does ``model.precision: auto``
        run it; an INT8 IR the card vouches for by hash alone is used only when asked for by
        name."""
        return self.int8_unverified_reason is None

    @property
    def int8_unverified_reason(self) -> str | None:
        """Why ``precision: auto`` must not run the INT8 IR, or None when it may: the card must
        ship it (``metrics.int8.shipped``) and record ``metrics.int8.agreement`` with every
        label equal to float's and max |dp| within the allowed bound, on ``n`` tiles no
        training or quantizer calibration saw."""
        i8 = self.data.get("metrics", {}).get("int8", {})
        if not self.has("openvino_int8") or i8.get("shipped") is not True:
            return "the card ships no verified INT8 IR"
        agree = i8.get("agreement")
        if not isinstance(agree, dict) or not {"max_abs_dp", "label_agreement", "n"} <= set(agree):
            return "the card records no INT8-vs-float agreement (metrics.int8.agreement)"
        allowed = float(agree.get("max_abs_dp_allowed", 0.02))
        if agree["label_agreement"] < 1.0 or agree["max_abs_dp"] > allowed or agree["n"] < 1:
            return (f"INT8 does not reproduce float on {agree['n']} tiles (max |dp| "
                    f"{agree['max_abs_dp']}, labels agree {agree['label_agreement']:.1%})")
        return None

    @property
    def p_damaged_threshold(self) -> float:
        """The card's threshold as a p(damaged) cut: a tile is damaged above it (p_undamaged
        models: p_undamaged < threshold) or from it on (p_damaged models)."""
        return 1.0 - self.threshold if self.output_is_p_undamaged else self.threshold

    def is_damaged(self, p_damaged):
        """Per-tile decision at the card's threshold, for p(damaged) as every engine returns
        it: the one rule that engines, the report heat map and the labels share."""
        if self.output_is_p_undamaged:
            return (1.0 - p_damaged) < self.threshold
        return p_damaged >= self.threshold

    def path_for(self, kind: str) -> Path:
        """The verified path of the file of ``kind`` (``keras``, ``openvino``, ``openvino_int8``)."""
        files = self.data.get("files", {})
        if kind not in files:
            raise ModelError(f"{self.dir / CARD_NAME}: the card lists no {kind!r} model file")
        path = self.dir / files[kind]
        self.verify(path)
        if path.suffix == ".xml":
            self.verify(path.with_suffix(".bin"))
        return path

    def verify(self, path: Path) -> None:
        """Raise :class:`ModelIntegrityError` unless ``path`` matches the card's sha256."""
        expected = self.data.get("sha256", {}).get(path.name)
        if expected is None:
            raise ModelIntegrityError(f"{path}: not listed in the model card's sha256 table")
        if not path.exists():
            raise ModelError(f"{path}: model file missing (the card lists it)")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelIntegrityError(
                f"{path}: sha256 {actual[:16]}... does not match the model card "
                f"({expected[:16]}...); the file is damaged or was replaced. "
                "Re-copy the model directory or re-export it with `skysift model convert`."
            )

    def verify_all(self) -> None:
        for name in self.data.get("sha256", {}):
            self.verify(self.dir / name)


def load_card(model_dir: Path | str | None = None) -> ModelCard:
    """Load the card of ``model_dir`` (default: the shipped model)."""
    d = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    if d.is_file() and d.name == CARD_NAME:
        d = d.parent
    card_path = d / CARD_NAME
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{card_path}: no model card; `model.path` must name a model directory") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{card_path}: unreadable model card: {exc}") from None
    for key in ("input", "files", "sha256"):
        if key not in data:
            raise ModelError(f"{card_path}: the card has no {key!r} section")
    return ModelCard(dir=d, data=data)


def write_card(model_dir: Path, data: dict[str, Any]) -> Path:
    """Write ``model_card.json``, filling ``sha256`` for every file in ``files`` (and IR .bin)."""
    hashes: dict[str, str] = {}
    for rel in data.get("files", {}).values():
        p = model_dir / rel
        hashes[p.name] = sha256_file(p)
        if p.suffix == ".xml":
            b = p.with_suffix(".bin")
            hashes[b.name] = sha256_file(b)
    out = dict(data)
    out["sha256"] = hashes
    path = model_dir / CARD_NAME
    path.write_text(json.dumps(out, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
