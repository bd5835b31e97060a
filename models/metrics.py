"""Classification metrics as the model card reports them, damaged being the positive class."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.dataset import CLASSES


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


def brier(p_undamaged: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error of the probability against the 0/1 label (lower is better)."""
    p, y = np.asarray(p_undamaged, np.float64), np.asarray(y, np.float64)
    return round(float(np.mean((p - y) ** 2)), 4) if len(y) else 0.0


def ece(p_undamaged: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the tile-weighted mean |observed rate - mean p| over ``bins``
    equal-width probability bins. 0 means "p = 0.7" is right 70 % of the time."""
    p, y = np.asarray(p_undamaged, np.float64), np.asarray(y, np.float64)
    if not len(y):
        return 0.0
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    err = sum(abs(y[which == b].mean() - p[which == b].mean()) * (which == b).sum()
              for b in range(bins) if (which == b).any())
    return round(float(err / len(y)), 4)


def calibration_figures(p_undamaged: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"brier": brier(p_undamaged, y), "ece": ece(p_undamaged, y)}
