"""Turn a user's model into OpenVINO IR plus a model card: `skysift model convert`.

Accepts what users actually have: a Keras 3 ``.keras`` file, a legacy TF 1.x / Keras 2 ``.h5``
(which Keras 3 often cannot deserialize: we then rebuild the network from the HDF5's own
``model_config`` and copy the weights layer by layer with h5py), a TensorFlow SavedModel
directory or an ONNX file (both of which OpenVINO reads directly). A model the engines cannot
run is refused here with the reason (:mod:`models.io_spec`), and a conversion that fails leaves
nothing behind: everything is written into a hidden folder beside ``out_dir`` and moved into
place at the end. TensorFlow and OpenVINO are imported inside the functions: this module is
only used when converting or training.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.errors import ModelError
from models.card import CARD_NAME, write_card
from models.io_spec import input_spec, output_spec

log = logging.getLogger(__name__)

IR_NAME = "model.xml"
INT8_NAME = "model-int8.xml"
KERAS_NAME = "model.keras"
OUTPUT_TENSOR = "p_undamaged"
#: the output tensor's name in a converted softmax model
SOFTMAX_TENSOR = "class_probabilities"


def _quiet_tf() -> None:
    # TensorFlow prints oneDNN/CUDA banners on import; they read like errors to a user.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def export_ir(model: Any, out_dir: Path, name: str = IR_NAME) -> Path:
    """Convert a Keras model (or a SavedModel path) to IR with FP16-compressed weights.

    The output tensor is renamed ``p_undamaged`` so the graph says what it computes.
    """
    ov_model = to_ov_model(model)
    if len(ov_model.inputs) != 1 or len(ov_model.outputs) != 1:
        raise ModelError(
            f"the model has {len(ov_model.inputs)} inputs and {len(ov_model.outputs)} outputs; "
            "skysift needs exactly one tile input and one sigmoid output"
        )
    return save_ir(ov_model, out_dir, name, OUTPUT_TENSOR)


def to_ov_model(model: Any) -> Any:
    """An ``ov.Model`` from a Keras model, or from a SavedModel directory or ONNX file path."""
    import warnings

    import openvino as ov

    with warnings.catch_warnings():
        # Keras 3 warns that the converter passes the input as a tuple; the trace is correct.
        warnings.filterwarnings("ignore", message="The structure of `inputs`")
        if isinstance(model, Path):
            return ov.convert_model(str(model))
        # A reloaded Sequential model has no traced signature: give the input shape
        # explicitly (batch left dynamic) or the converter sees a tensor of unknown rank.
        shape = [-1 if d is None else int(d) for d in model.inputs[0].shape]
        return ov.convert_model(model, input=[ov.PartialShape(shape)])


def save_ir(ov_model: Any, out_dir: Path, name: str, output_name: str, fp16: bool = True) -> Path:
    """Save ``ov_model`` as ``out_dir/name`` (+ .bin), its output tensor named ``output_name``.

    ``fp16`` compresses the weights (half the size; a sigmoid moves by ~1e-3); ``False`` keeps
    them f32, so the IR computes what the source model computes to float rounding.
    """
    import openvino as ov

    ov_model.outputs[0].get_tensor().set_names({output_name})
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    ov.save_model(ov_model, str(path), compress_to_fp16=fp16)
    return path


def ir_predict(xml: Path, tiles_u8: np.ndarray, scale: float = 1 / 255, batch: int = 64) -> np.ndarray:
    """Run an IR on uint8 tiles (N, H, W) on CPU in f32 and return its raw sigmoid output (N,).

    f32 is forced: on CPUs with AVX512-BF16 OpenVINO would otherwise run bf16 and the metrics
    recorded in the card would not be reproducible on other machines.
    """
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = tiles_u8.astype(np.float32)[..., None] * np.float32(scale)
    out = [np.asarray(compiled(x[i : i + batch])[0]).reshape(-1) for i in range(0, len(x), batch)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def load_keras_model(src: Path) -> tuple[Any, str]:
    """Load a ``.keras`` or ``.h5`` file with Keras 3, rebuilding legacy HDF5 files if needed.

    Returns ``(model, loader)`` with loader ``keras`` or ``h5-rebuild`` (recorded in the card).
    """
    _quiet_tf()
    import keras

    try:
        return keras.models.load_model(src, compile=False), "keras"
    except Exception as exc:  # Keras raises many types for files it cannot read
        if src.suffix.lower() not in (".h5", ".hdf5"):
            raise ModelError(f"{src}: Keras could not load this model: {exc}") from exc
        first_error = exc
    log.info("Keras 3 cannot load %s directly (%s); rebuilding it from its HDF5 config", src, first_error)
    try:
        return rebuild_legacy_h5(src), "h5-rebuild"
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"{src}: not loadable as a Keras model. keras.models.load_model failed with "
            f"{type(first_error).__name__}: {first_error}; rebuilding from the HDF5 "
            f"model_config failed with {type(exc).__name__}: {exc}"
        ) from exc


# Keras 2 / TF 1.x layer configs carry arguments Keras 3 rejects; dropping them is harmless.
_LEGACY_KEYS = ("batch_input_shape", "batch_shape", "ragged", "sparse", "time_major")


def rebuild_legacy_h5(src: Path):
    """Rebuild a layer-chain model from a legacy (TF 1.x / Keras 2) HDF5 file and copy its weights.

    Handles Sequential models and Functional models whose layers form a single chain, made of
    the built-in layer types of image CNNs (Conv2D, pooling, Dropout, Flatten, Dense,
    BatchNormalization, Activation, ...). Initializers, regularizers and constraints are
    dropped: they only matter for training, and every weight is overwritten from the file.
    """
    import h5py
    import keras

    with h5py.File(src, "r") as f:
        raw = f.attrs.get("model_config")
        if raw is None:
            raise ModelError(f"{src}: HDF5 file holds weights only (no model_config); save the whole model")
        cfg = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        weights_group = f.get("model_weights", f)
        layer_cfgs = cfg["config"]["layers"] if isinstance(cfg["config"], dict) else cfg["config"]
        input_shape = None
        layers: list[Any] = []
        for lc in layer_cfgs:
            cls_name = lc["class_name"]
            for node in lc.get("inbound_nodes") or []:
                args = node if isinstance(node, list) else node.get("args", [])
                if len(args) > 1:
                    raise ModelError(
                        f"{src}: layer {lc['config'].get('name')!r} has several inputs; only "
                        "single-chain legacy models can be rebuilt (re-save it as .keras or SavedModel)"
                    )
            conf = dict(lc["config"])
            shape = conf.get("batch_input_shape") or conf.get("batch_shape")
            if shape and input_shape is None:
                input_shape = tuple(shape[1:])
            if cls_name == "InputLayer":
                continue
            for k in _LEGACY_KEYS:
                conf.pop(k, None)
            conf.pop("dtype", None)  # TF1 stores dtype policies Keras 3 does not parse
            cls = getattr(keras.layers, cls_name, None)
            if cls is None:
                raise ModelError(f"{src}: legacy layer type {cls_name!r} is not supported by the rebuild")
            for k in list(conf):
                if k.endswith(("_initializer", "_regularizer", "_constraint")):
                    conf.pop(k)
            layers.append(cls(**conf))
        if input_shape is None:
            raise ModelError(f"{src}: the HDF5 config does not record the input shape")
        model = keras.Sequential([keras.Input(shape=input_shape), *layers])
        for layer in model.layers:
            if layer.name not in weights_group or not layer.weights:
                continue
            g = weights_group[layer.name]
            names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs.get("weight_names", [])]
            arrays = [np.asarray(g[n]) for n in names]
            if len(arrays) != len(layer.weights):
                raise ModelError(
                    f"{src}: layer {layer.name!r} has {len(arrays)} stored weights, expected "
                    f"{len(layer.weights)}"
                )
            layer.set_weights(arrays)
    return model


def versions() -> dict[str, str]:
    """Versions of the libraries that produced a model, for the card."""
    import importlib.metadata as md

    out: dict[str, str] = {}
    for pkg, dist in (("tensorflow", "tensorflow-cpu"), ("keras", "keras"), ("openvino", "openvino"),
                      ("nncf", "nncf"), ("numpy", "numpy")):
        for d in (dist, pkg):
            try:
                out[pkg] = md.version(d)
                break
            except md.PackageNotFoundError:
                continue
    return out



def _source_format(src: Path) -> str:
    if src.is_dir():
        if not (src / "saved_model.pb").exists():
            raise ModelError(f"{src}: a directory must be a TensorFlow SavedModel (no saved_model.pb)")
        return "saved_model"
    suffix = src.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    return "keras" if suffix == ".keras" else "h5"


def _load(src: Path, fmt: str) -> tuple[Any, Any, str]:
    """``(ov_model, keras_model or None, loader)`` for ``src`` of format ``fmt``."""
    if fmt in ("saved_model", "onnx"):
        what = "SavedModel" if fmt == "saved_model" else "ONNX model"
        try:
            return to_ov_model(src), None, "openvino"
        except Exception as exc:  # the converter raises its own types for unreadable graphs
            raise ModelError(f"{src}: OpenVINO could not convert this {what}: {exc}") from exc
    model, loader = load_keras_model(src)
    try:
        return to_ov_model(model), model, loader
    except Exception as exc:
        raise ModelError(f"{src}: OpenVINO could not convert this model: {exc}") from exc


@contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A hidden folder beside ``out_dir`` to write into; its files replace ``out_dir``'s at the
    end, the card last, so a conversion that fails or is killed leaves no half model behind
    (and an older model in ``out_dir`` fails its card's hashes rather than running mixed)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.converting-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if not out_dir.exists():
            os.replace(tmp, out_dir)
            return
        names = sorted(p.name for p in tmp.iterdir())
        for name in [n for n in names if n != CARD_NAME] + [CARD_NAME]:
            os.replace(tmp / name, out_dir / name)
        tmp.rmdir()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def convert(
    src: Path,
    out_dir: Path,
    *,
    output_meaning: str = "p_undamaged",
    keep_keras: bool = True,
    output_kind: str | None = None,
    damaged_classes: list[int] | None = None,
    labels: list[str] | None = None,
    fp16: bool = True,
) -> Path:
    """Convert ``src`` (.keras, .h5, .onnx or SavedModel dir) to IR + card in ``out_dir``.

    ``output_kind`` (``sigmoid``/``softmax``, default: from the output width), ``damaged_classes``
    and ``labels`` describe the output (see :func:`models.io_spec.output_spec`). Returns the
    card's path. Raises :class:`ModelError` naming the reason when the engines cannot run it.
    """
    src = Path(src)
    if not src.exists():
        raise ModelError(f"{src}: no such file or directory")
    out_dir = Path(out_dir)
    fmt = _source_format(src)
    ov_model, keras_model, loader = _load(src, fmt)
    try:
        spec = {"input": input_spec(ov_model),
                **output_spec(ov_model, output_kind, output_meaning, damaged_classes, labels)}
    except ModelError as exc:
        raise ModelError(f"{src}: {exc}") from None
    tensor = SOFTMAX_TENSOR if spec["output"]["kind"] == "softmax" else OUTPUT_TENSOR
    with _staging(out_dir) as tmp:
        files = {"openvino": save_ir(ov_model, tmp, IR_NAME, tensor, fp16).name}
        engines = ["openvino"]
        if keras_model is not None and keep_keras:
            # The TensorFlow engine needs a Keras 3 file; re-saving also upgrades a legacy .h5.
            keras_model.save(tmp / KERAS_NAME)
            files["keras"] = KERAS_NAME
            engines.append("tensorflow")
        card = {
            "name": src.stem,
            "version": "1",
            **spec,
            "threshold": 0.5,
            "engines": engines,
            "files": files,
            "converted_from": {"path": src.name, "format": fmt, "loader": loader,
                               "weights": "fp16" if fp16 else "fp32"},
            "versions": versions(),
            "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        write_card(tmp, card)
    return out_dir / CARD_NAME
