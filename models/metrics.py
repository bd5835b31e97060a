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
