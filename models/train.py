"""Train the damage CNN on a `damaged/` + `undamaged/` folder: `skysift model train`.

What a run does, in order:

1. Load every tile as 128x128 grayscale uint8 (the same conversion the engines apply).
2. Split off a stratified held-out set (``test_frac``, seeded). Training never sees it.
3. Optionally, k-fold stratified cross-validation on the *training* part only, to show how much
   one small held-out split can be trusted.
4. Train the shipped model on the training part with dihedral augmentation (flips and
   90-degree rotations: the tiles are aerial, so there is no "up").
5. Export ``model.keras``, the FP16 IR, and an INT8 IR if NNCF keeps the held-out accuracy
   within ``int8_tolerance``; evaluate the IRs themselves on the held-out tiles.
6. Write ``model_card.json`` (with hashes) and ``MODEL_CARD.md``.

The shipped model is the one trained on the training part only, so the held-out metrics in the
card are exactly the shipped model's (a test re-computes them from the IR).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.errors import ModelError
from models.architecture import DEFAULT_ARCHITECTURE, build_model
from models.card import load_card, write_card
from models.convert import (
    INT8_NAME,
    IR_NAME,
    KERAS_NAME,
    _quiet_tf,
    export_ir,
    ir_predict,
    versions,
)

log = logging.getLogger(__name__)

CLASSES = ("damaged", "undamaged")  # index = label, as in the 2020 data (0 damaged, 1 undamaged)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Dataset:
    x: np.ndarray  # uint8 (N, H, W)
    y: np.ndarray  # int64 (N,), 0 damaged / 1 undamaged
    names: list[str]  # "damaged/tile_001.png"
    file_sha256: list[str]


def load_dataset(data_dir: Path, input_px: int = 128) -> Dataset:
    """Read ``data_dir/{damaged,undamaged}/*`` as grayscale uint8 tiles of ``input_px``."""
    import cv2

    data_dir = Path(data_dir)
    xs, ys, names, hashes = [], [], [], []
    for label, cls in enumerate(CLASSES):
        folder = data_dir / cls
        if not folder.is_dir():
            raise ModelError(f"{data_dir}: training data needs a {cls}/ subfolder")
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() not in IMAGE_EXTS:
                continue
            raw = p.read_bytes()
            img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise ModelError(f"{p}: not a readable image")
            if img.shape != (input_px, input_px):
                img = cv2.resize(img, (input_px, input_px), interpolation=cv2.INTER_AREA)
            xs.append(img)
            ys.append(label)
            names.append(f"{cls}/{p.name}")
            hashes.append(hashlib.sha256(raw).hexdigest())
    if not xs or len(set(ys)) < 2:
        raise ModelError(f"{data_dir}: need images in both damaged/ and undamaged/")
    return Dataset(np.stack(xs), np.asarray(ys, np.int64), names, hashes)


def provenance(data_dir: Path, ds: Dataset) -> dict[str, Any]:
    """Where the data came from: the path (relative to the project when possible), counts, and a
    sha256 over the sorted "name sha256" lines, which pins both the file list and the contents."""
    data_dir = Path(data_dir)
    try:
        shown = os.path.relpath(data_dir.resolve(), PROJECT_ROOT)
    except ValueError:  # other drive on Windows
        shown = str(data_dir)
    lines = sorted(f"{n} {h}" for n, h in zip(ds.names, ds.file_sha256, strict=True))
    return {
        "path": shown,
        "counts": {cls: int((ds.y == i).sum()) for i, cls in enumerate(CLASSES)},
        "files_sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(),
        "files_sha256_method": "sha256 of the sorted lines '<class>/<name> <sha256 of file>' joined by \\n",
    }


def stratified_split(y: np.ndarray, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with each class split in the same proportion."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = max(1, round(len(idx) * test_frac))
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.sort(np.asarray(train)), np.sort(np.asarray(test))


def stratified_folds(y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train, validation) index pairs; every sample is validated exactly once."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold_of[idx] = np.arange(len(idx)) % k
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def dihedral(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Apply one random element of the 8 flips/90-degree rotations to each tile (N, H, W)."""
    out = np.empty_like(x)
    ops = rng.integers(0, 8, len(x))
    for i, op in enumerate(ops):
        t = np.rot90(x[i], op % 4)
        out[i] = t[:, ::-1] if op >= 4 else t
    return out


def metrics(p_undamaged: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, and precision/recall/F1 with *damaged* as the positive class (what responders
    look for). Confusion matrix rows = true class, columns = predicted, order damaged, undamaged."""
    pred = (np.asarray(p_undamaged) >= threshold).astype(np.int64)
    y = np.asarray(y)
    tp = int(((pred == 0) & (y == 0)).sum())
    fn = int(((pred == 1) & (y == 0)).sum())
    fp = int(((pred == 0) & (y == 1)).sum())
    tn = int(((pred == 1) & (y == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": int(len(y)),
        "accuracy": round((tp + tn) / len(y), 4) if len(y) else 0.0,
        "accuracy_ci95": wilson_interval(tp + tn, len(y)),
        "precision_damaged": round(precision, 4),
        "recall_damaged": round(recall, 4),
        "f1_damaged": round(f1, 4),
        "confusion_matrix": {"rows_true_cols_pred": list(CLASSES), "matrix": [[tp, fn], [fp, tn]]},
    }


def wilson_interval(successes: int, n: int, z: float = 1.96) -> list[float]:
    """95 % Wilson score interval of a proportion: on 50 held-out tiles one error is 2 points,
    so the card says how far the true accuracy may be from the measured one."""
    if n == 0:
        return [0.0, 1.0]
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * np.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return [round(float(centre - half), 4), round(float(centre + half), 4)]


@dataclass
class TrainParams:
    seed: int = 2020
    epochs: int = 40
    batch_size: int = 16
    learning_rate: float = 2e-3
    architecture: str = DEFAULT_ARCHITECTURE
    augment: bool = True
    test_frac: float = 0.25
    cv_folds: int = 0
    int8: bool = True
    int8_tolerance: float = 0.01


def _seed_everything(seed: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    # Same seed, same data, same machine -> same weights. Op determinism alone is not enough
    # on CPU: with several inter-op threads the gradient sums are added in whatever order the
    # threads finish (measured: different weights after one step). One inter-op thread keeps
    # the order fixed; each op still uses every core (intra-op threads).
    if tf.config.threading.get_inter_op_parallelism_threads() != 1:
        try:
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TF already initialised by the caller: cannot be changed now
            log.warning("TensorFlow is already running with several inter-op threads; "
                        "training will not be bit-for-bit reproducible")
    tf.config.experimental.enable_op_determinism()


def fit(x: np.ndarray, y: np.ndarray, p: TrainParams, seed: int, progress: Callable[[str], None] | None = None):
    """Train a fresh model on uint8 tiles ``x`` with labels ``y``; return the Keras model.

    A plain GradientTape loop over numpy batches rather than ``model.fit``: with a new
    augmented copy of the data each epoch, ``fit`` would rebuild a tf.data pipeline every
    epoch, which costs more than the training step on 150 tiles.
    """
    import keras
    import tensorflow as tf

    _seed_everything(seed)
    model = build_model(p.architecture, x.shape[1])
    steps_per_epoch = max(1, -(-len(x) // p.batch_size))
    lr = keras.optimizers.schedules.CosineDecay(p.learning_rate, decay_steps=steps_per_epoch * p.epochs,
                                                alpha=0.05)
    opt = keras.optimizers.Adam(lr)
    bce = keras.losses.BinaryCrossentropy()
    # Balanced class weights: 84 damaged vs 116 undamaged would otherwise bias towards undamaged.
    counts = np.bincount(y, minlength=2)
    class_weight = np.asarray([len(y) / (2 * counts[c]) for c in range(2)], np.float32)

    @tf.function(reduce_retracing=True)
    def step(xb, yb, wb):
        with tf.GradientTape() as tape:
            pb = model(xb, training=True)
            loss = bce(yb, pb, sample_weight=wb)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss, pb

    rng = np.random.default_rng(seed)
    for epoch in range(p.epochs):
        # A fresh dihedral transform of every tile each epoch: 8x the variety for free.
        xe = dihedral(x, rng) if p.augment else x
        order = rng.permutation(len(x))
        losses, correct = [], 0
        for b in range(0, len(x), p.batch_size):
            idx = order[b : b + p.batch_size]
            xb = tf.constant(xe[idx].astype(np.float32)[..., None] / np.float32(255))
            yb = tf.constant(y[idx].astype(np.float32)[:, None])
            loss, pb = step(xb, yb, tf.constant(class_weight[y[idx]]))
            losses.append(float(loss) * len(idx))
            correct += int(((pb.numpy().reshape(-1) >= 0.5) == (y[idx] == 1)).sum())
        if progress and ((epoch + 1) % 10 == 0 or epoch + 1 == p.epochs):
            progress(f"epoch {epoch + 1}/{p.epochs}: loss {sum(losses) / len(x):.3f} "
                     f"train accuracy {correct / len(x):.3f}")
    return model


def keras_predict(model, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Inference-mode sigmoid output (N,) for uint8 tiles (N, H, W)."""
    out = [np.asarray(model(x[i : i + batch].astype(np.float32)[..., None] / np.float32(255), training=False))
           for i in range(0, len(x), batch)]
    return np.concatenate(out).reshape(-1)


def clean_copy(model, p: TrainParams):
    """The trained weights in a fresh, uncompiled model: the saved .keras then carries no
    optimizer state (a third of the file) and loads without custom training objects."""
    fresh = build_model(p.architecture, model.inputs[0].shape[1])
    fresh.set_weights(model.get_weights())
    return fresh


def cross_validate(ds_x: np.ndarray, ds_y: np.ndarray, p: TrainParams,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Stratified k-fold CV on the given (training) tiles; mean and std of the fold metrics."""
    folds = []
    for i, (tr, va) in enumerate(stratified_folds(ds_y, p.cv_folds, p.seed)):
        model = fit(ds_x[tr], ds_y[tr], p, p.seed + 1 + i)
        m = metrics(keras_predict(model, ds_x[va]), ds_y[va])
        folds.append(m)
        if progress:
            progress(f"fold {i + 1}/{p.cv_folds}: accuracy {m['accuracy']:.3f}")
    out: dict[str, Any] = {"k": p.cv_folds, "on": "training split only", "folds": [f["accuracy"] for f in folds]}
    for key in ("accuracy", "precision_damaged", "recall_damaged", "f1_damaged"):
        vals = np.asarray([f[key] for f in folds])
        out[f"{key}_mean"] = round(float(vals.mean()), 4)
        out[f"{key}_std"] = round(float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, 4)
    return out


def train(data_dir: Path, out_dir: Path, params: TrainParams | None = None,
          progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the whole pipeline (module docstring) and return the card written to ``out_dir``."""
    _quiet_tf()
    p = params or TrainParams()
    say = progress or (lambda msg: log.info("%s", msg))
    t0 = time.monotonic()
    ds = load_dataset(Path(data_dir))
    train_idx, test_idx = stratified_split(ds.y, p.test_frac, p.seed)
    say(f"{len(ds.y)} tiles: {len(train_idx)} for training, {len(test_idx)} held out")
    cv = None
    if p.cv_folds >= 2:
        say(f"{p.cv_folds}-fold cross-validation on the training split")
        cv = cross_validate(ds.x[train_idx], ds.y[train_idx], p, say)
    say(f"training {p.architecture} for {p.epochs} epochs (seed {p.seed})")
    model = fit(ds.x[train_idx], ds.y[train_idx], p, p.seed, say)
    x_test, y_test = ds.x[test_idx], ds.y[test_idx]
    keras_m = metrics(keras_predict(model, x_test), y_test)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in (INT8_NAME, Path(INT8_NAME).with_suffix(".bin").name):
        (out_dir / stale).unlink(missing_ok=True)  # an INT8 IR from a previous run must not linger
    model = clean_copy(model, p)
    model.save(out_dir / KERAS_NAME)
    xml = export_ir(model, out_dir, IR_NAME)
    files = {"keras": KERAS_NAME, "openvino": IR_NAME}
    held_out = metrics(ir_predict(xml, x_test), y_test)
    say(f"held-out accuracy {held_out['accuracy']:.3f} (IR FP16), {keras_m['accuracy']:.3f} (Keras)")

    int8_info: dict[str, Any] = {"attempted": p.int8}
    if p.int8:
        from models.quantize import quantize_int8

        try:
            int8_xml = quantize_int8(xml, ds.x[train_idx], out_dir / INT8_NAME, seed=p.seed)
        except Exception as exc:  # NNCF missing or failing must not lose the trained model
            log.warning("INT8 quantization failed: %s", exc)
            int8_info.update(shipped=False, error=f"{type(exc).__name__}: {exc}")
        else:
            m8 = metrics(ir_predict(int8_xml, x_test), y_test)
            keep = m8["accuracy"] >= held_out["accuracy"] - p.int8_tolerance
            int8_info.update(held_out=m8, shipped=keep, tolerance=p.int8_tolerance)
            say(f"INT8 held-out accuracy {m8['accuracy']:.3f}: {'shipped' if keep else 'dropped'}")
            if keep:
                files["openvino_int8"] = INT8_NAME
            else:
                int8_xml.unlink()
                int8_xml.with_suffix(".bin").unlink()

    card: dict[str, Any] = {
        "name": "skysift-damage-cnn",
        "version": "1",
        "architecture": p.architecture,
        "parameters": int(model.count_params()),
        "input": {"height": int(ds.x.shape[1]), "width": int(ds.x.shape[2]), "channels": 1,
                  "layout": "NHWC", "dtype": "float32", "scale": 1 / 255},
        "output": {"meaning": "p_undamaged"},
        "labels": {"0": "damaged", "1": "undamaged"},
        "threshold": 0.5,
        "files": files,
        "metrics": {
            "held_out": held_out,
            "held_out_keras": keras_m,
            "held_out_note": "IR (FP16 weights) evaluated on CPU in f32 on the held-out tiles",
            "cross_validation": cv,
            "int8": int8_info,
        },
        "training": {
            "data": provenance(Path(data_dir), ds),
            "split": {
                "method": "stratified random split per class (numpy default_rng(seed))",
                "seed": p.seed,
                "test_frac": p.test_frac,
                "train": len(train_idx),
                "held_out": len(test_idx),
                "held_out_files": [ds.names[i] for i in test_idx],
            },
            "shipped_model_trained_on": "training split only (held-out metrics are the shipped model's)",
            "epochs": p.epochs,
            "batch_size": p.batch_size,
            "optimizer": f"Adam, cosine-decayed learning rate from {p.learning_rate}",
            "loss": "binary cross-entropy, balanced class weights",
            "augmentation": "random flip / 90-degree rotation (8 dihedral transforms) per tile per epoch"
            if p.augment else "none",
            "deterministic": "keras.utils.set_random_seed + tf.config.experimental.enable_op_determinism",
            "seconds": round(time.monotonic() - t0, 1),
        },
        "versions": versions(),
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    write_card(out_dir, card)
    card = load_card(out_dir).data  # now with the sha256 table
    write_markdown(out_dir, card)
    return card


def write_markdown(out_dir: Path, card: dict[str, Any]) -> Path:
    """A short human-readable MODEL_CARD.md beside the JSON card."""
    m = card["metrics"]
    h = m["held_out"]
    cm = h["confusion_matrix"]["matrix"]
    t = card["training"]
    d = t["data"]
    lines = [
        f"# {card['name']} (architecture {card['architecture']}, {card['parameters']:,} parameters)",
        "",
        "Classifies 128x128 grayscale aerial tiles as damaged or undamaged.",
        "",
        f"- **Input**: {card['input']['height']}x{card['input']['width']}x1 NHWC float32 = u8 / 255.",
        "- **Output**: one sigmoid, p(undamaged); >= 0.5 means undamaged (the 2020 convention).",
        f"- **Training data**: `{d['path']}`: {d['counts']['damaged']} damaged, "
        f"{d['counts']['undamaged']} undamaged (files sha256 `{d['files_sha256'][:16]}...`).",
        f"- **Split**: stratified, seed {t['split']['seed']}: {t['split']['train']} tiles for training, "
        f"{t['split']['held_out']} held out and never seen in training. The shipped model is trained "
        "on the training split only, so the figures below are the shipped model's own.",
        f"- **Training**: {t['epochs']} epochs, {t['optimizer']}, {t['loss']}; augmentation: "
        f"{t['augmentation']}.",
        "",
        f"## Held-out results ({h['n']} tiles, OpenVINO IR)",
        "",
        f"Accuracy **{h['accuracy']:.1%}**"
        + (f" (95 % Wilson interval {h['accuracy_ci95'][0]:.1%} to {h['accuracy_ci95'][1]:.1%})"
           if "accuracy_ci95" in h else "")
        + f"; damaged class: precision {h['precision_damaged']:.1%}, "
        f"recall {h['recall_damaged']:.1%}, F1 {h['f1_damaged']:.3f}.",
        "",
        "| true \\ predicted | damaged | undamaged |",
        "|---|---|---|",
        f"| damaged | {cm[0][0]} | {cm[0][1]} |",
        f"| undamaged | {cm[1][0]} | {cm[1][1]} |",
        "",
    ]
    cv = m.get("cross_validation")
    if cv:
        lines += [f"{cv['k']}-fold stratified cross-validation on the training split: accuracy "
                  f"{cv['accuracy_mean']:.1%} +/- {cv['accuracy_std']:.1%} (folds: "
                  f"{', '.join(f'{a:.2f}' for a in cv['folds'])}).", ""]
    i8 = m.get("int8", {})
    if "held_out" in i8:
        lines += [f"INT8 (NNCF post-training quantization): held-out accuracy {i8['held_out']['accuracy']:.1%} "
                  f"vs {h['accuracy']:.1%} FP16; {'shipped as model-int8.xml' if i8['shipped'] else 'not shipped'}.", ""]
    lines += [
        "## Files",
        "",
        *[f"- `{name}`: sha256 `{sha}`" for name, sha in card.get("sha256", {}).items()],
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()) + ".",
        "",
        "Training is bit-for-bit reproducible on the same CPU type and library versions "
        "(seeded, op determinism, one inter-op thread). "
        f"Reproduce: `skysift model train --data {d['path']} --out models/damage-cnn --seed "
        f"{t['split']['seed']} --epochs {t['epochs']}"
        + (f" --cv {cv['k']}" if cv else "") + "`",
        "",
    ]
    path = out_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
