"""Probability calibration and the decision threshold, both fitted on out-of-fold predictions.

The network's sigmoid is trained to separate the classes, not to be a probability: with 150
tiles and augmentation its raw p is over- or under-confident. Platt scaling, p' = sigmoid(a *
logit(p) + b), fitted on cross-validated out-of-fold predictions (tiles the predicting model
never saw) corrects that. Because logit(p) is the last Dense layer's output, the two numbers are
folded into that layer's weights (:func:`fold_into_model`): the saved .keras, the IR and the
INT8 IR then all output the calibrated p, and no engine has a step it could forget.
"""

from __future__ import annotations

import numpy as np

OUTPUT_LAYER = "p_undamaged"


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(z, np.float64)))


def fit_platt(p: np.ndarray, y: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """(a, b) minimising the log loss of sigmoid(a * logit(p) + b) against ``y`` (Newton steps).

    Targets are Platt's smoothed ones, (N+ + 1) / (N+ + 2) and 1 / (N- + 2), so that folds the
    model separates perfectly do not drive ``a`` to infinity.
    """
    z, y = logit(p), np.asarray(y, np.float64)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    w = np.array([1.0, 0.0])

    def loss(w: np.ndarray) -> float:
        m = w[0] * z + w[1]
        return float(np.sum(np.logaddexp(0, m) - t * m))

    for _ in range(iterations):
        q = sigmoid(w[0] * z + w[1])
        g = np.array([np.sum((q - t) * z), np.sum(q - t)])
        s = q * (1 - q) + 1e-12
        h = np.array([[np.sum(s * z * z), np.sum(s * z)], [np.sum(s * z), np.sum(s)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        # Backtracking: a full Newton step overshoots when the start is far off (saturated q).
        f0, scale = loss(w), 1.0
        while loss(w - scale * step) > f0 and scale > 1e-6:
            scale /= 2
        w = w - scale * step
        if np.abs(scale * step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def apply_platt(p: np.ndarray, a: float, b: float) -> np.ndarray:
    return sigmoid(a * logit(p) + b)


def cross_fitted(p: np.ndarray, y: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
    """Calibrated out-of-fold p where each fold's Platt is fitted on the other folds only: an
    honest figure of what calibration does for tiles its fit did not see."""
    out = np.empty(len(p))
    for f in np.unique(fold_of):
        a, b = fit_platt(p[fold_of != f], y[fold_of != f])
        out[fold_of == f] = apply_platt(p[fold_of == f], a, b)
    return out


def choose_threshold(p: np.ndarray, y: np.ndarray) -> float:
    """The threshold on p(undamaged) that maximises balanced accuracy (Youden's J) on ``p``.

    Candidates are the midpoints between neighbouring distinct p's (in logit space). When
    several tie, the middle of the widest tied run is taken: the decision then sits as far as
    the data allow from the tiles on either side.
    """
    z = np.unique(logit(p))
    cuts = np.concatenate([[z[0] - 1], (z[:-1] + z[1:]) / 2, [z[-1] + 1]])
    lz, y = logit(p), np.asarray(y)
    scores = []
    for c in cuts:
        pred = lz >= c
        tpr = (pred & (y == 1)).sum() / max(1, (y == 1).sum())
        tnr = (~pred & (y == 0)).sum() / max(1, (y == 0).sum())
        scores.append(round(float(tpr + tnr), 9))
    best = np.flatnonzero(np.asarray(scores) == max(scores))
    runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
    widest = max(runs, key=lambda r: z[min(r[-1], len(z) - 1)] - z[max(r[0] - 1, 0)])
    lo, hi = z[max(widest[0] - 1, 0)], z[min(widest[-1], len(z) - 1)]
    return round(float(sigmoid((lo + hi) / 2)), 4)


def fold_into_model(model, a: float, b: float) -> None:
    """Make the model output sigmoid(a * z + b) instead of sigmoid(z): scale the output layer's
    kernel and bias, so every export of the model carries the calibration."""
    layer = model.get_layer(OUTPUT_LAYER)
    kernel, bias = layer.get_weights()
    layer.set_weights([(kernel * a).astype(kernel.dtype), (bias * a + b).astype(bias.dtype)])
