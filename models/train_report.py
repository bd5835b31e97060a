"""What training writes into the card beyond accuracy: the out-of-fold calibration and
threshold, the cost per tile, and the ablations (CV with and without each change)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.calibration import apply_platt, choose_threshold, cross_fitted, fit_platt
from models.metrics import calibration_figures


def out_of_fold_calibration(cv: dict[str, Any], y_train: np.ndarray, raw_test: np.ndarray,
                            y_test: np.ndarray) -> dict[str, Any]:
    """Platt scaling and the threshold, fitted on the CV's out-of-fold p(undamaged), with the
    Brier score and ECE before and after, out of fold (cross-fitted) and on the held-out tiles."""
    oof, fold_of = cv["oof_p"], cv["fold_of"]
    a, b = fit_platt(oof, y_train)
    threshold = choose_threshold(apply_platt(oof, a, b), y_train)
    return {
        "method": f"Platt scaling sigmoid(a * logit(p) + b) fitted on {cv['k']}-fold out-of-fold p, "
                  "folded into the output layer (every engine and precision outputs calibrated p)",
        "platt": {"a": round(a, 4), "b": round(b, 4)},
        "threshold": threshold,
        "threshold_method": "maximum balanced accuracy (Youden J) on calibrated out-of-fold p; "
                            "middle of the widest tied interval",
        "out_of_fold": {"n": len(oof), "before": calibration_figures(oof, y_train),
                        "after": calibration_figures(cross_fitted(oof, y_train, fold_of), y_train),
                        "after_note": "each fold calibrated by a Platt fit on the other folds"},
        "held_out": {"n": len(raw_test), "before": calibration_figures(raw_test, y_test),
                     "after": calibration_figures(apply_platt(raw_test, a, b), y_test)},
        "cv_accuracy_at_threshold": _cv_at_threshold(oof, y_train, fold_of),
    }


def _cv_at_threshold(oof: np.ndarray, y: np.ndarray, fold_of: np.ndarray) -> dict[str, float]:
    """Fold accuracies when each fold is decided by a calibration and threshold chosen on the
    other folds only (so the tuned threshold is judged on tiles it was not tuned on)."""
    accs = []
    for f in np.unique(fold_of):
        rest, this = fold_of != f, fold_of == f
        a, b = fit_platt(oof[rest], y[rest])
        t = choose_threshold(apply_platt(oof[rest], a, b), y[rest])
        accs.append(float(((apply_platt(oof[this], a, b) >= t) == (y[this] == 1)).mean()))
    return {"accuracy_mean": round(float(np.mean(accs)), 4),
            "accuracy_std": round(float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0, 4),
            "folds": [round(v, 4) for v in accs]}


def tile_cost_ms(xml: Path, files: dict[str, str], out_dir: Path, batch: int = 64,
                 repeats: int = 5) -> dict[str, Any]:
    """OpenVINO CPU time per tile in f32 (and INT8 when shipped), best of ``repeats`` batches:
    the best run is the one least disturbed by other work on the machine."""
    import openvino as ov

    core = ov.Core()
    x = np.random.default_rng(0).integers(0, 255, (batch, 128, 128, 1)).astype(np.float32) / 255
    out: dict[str, Any] = {"batch": batch, "device": "CPU"}
    paths = {"f32": xml}
    if "openvino_int8" in files:
        paths["int8"] = out_dir / files["openvino_int8"]
    for name, path in paths.items():
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        compiled(x)
        best = min(_timed(compiled, x) for _ in range(repeats))
        out[name] = round(best * 1000 / batch, 3)
    return out


def _timed(compiled, x: np.ndarray) -> float:
    t = time.perf_counter()
    compiled(x)
    return time.perf_counter() - t


def ablations(out_dir: Path, card: dict[str, Any]) -> list[dict[str, Any]]:
    """CV accuracy with and without each change. One side is the card's own CV (the shipped
    configuration); the other comes from ``ablations.json`` (``python -m models.ablation``: the
    same CV with one change toggled). The tuned threshold needs no extra run: its two sides are
    the same out-of-fold predictions at 0.5 and at a threshold tuned on the other folds."""
    cv, calib = card["metrics"].get("cross_validation"), card["metrics"].get("calibration")
    if not cv or not calib:
        return []
    command = card["training"]["command"]
    shipped = {k: cv[k] for k in _CV_KEYS if k in cv}
    rows = [{"change": "decision threshold tuned out of fold (and Platt calibration)", "shipped": True,
             "with": calib["cv_accuracy_at_threshold"],
             "without": {"accuracy_mean": cv["accuracy_mean"], "accuracy_std": cv["accuracy_std"],
                         "folds": cv["folds"], "note": "threshold 0.5 on uncalibrated p"},
             "command": command}]
    path = Path(out_dir) / "ablations.json"
    if path.exists():
        for r in json.loads(path.read_text(encoding="utf-8")):
            on = not r["variant_has_change"]  # the shipped model has the change the variant lacks
            rows.append({"change": r["change"], "shipped": on,
                         "with": shipped if on else r["variant"], "without": r["variant"] if on else shipped,
                         "command": r["command"], "shipped_command": command})
    return rows


_CV_KEYS = ("accuracy_mean", "accuracy_std", "perturbed_accuracy_mean", "perturbed_accuracy_std", "folds")
