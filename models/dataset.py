"""The training data: tiles from a ``damaged/`` + ``undamaged/`` folder, their provenance, and
the seeded stratified splits and augmentation training uses.

Labels follow the 2020 data: index 0 is damaged, 1 undamaged (the model outputs p(undamaged)).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.errors import ModelError

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
    shown = provenance_path(data_dir)
    lines = sorted(f"{n} {h}" for n, h in zip(ds.names, ds.file_sha256, strict=True))
    return {
        "path": shown,
        "counts": {cls: int((ds.y == i).sum()) for i, cls in enumerate(CLASSES)},
        "files_sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest(),
        "files_sha256_method": "sha256 of the sorted lines '<class>/<name> <sha256 of file>' joined by \\n",
    }


def provenance_path(path: Path) -> str:
    """``path`` relative to the project when possible: cards must not name this machine's paths."""
    try:
        return os.path.relpath(Path(path).resolve(), PROJECT_ROOT)
    except ValueError:  # other drive on Windows
        return str(path)


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


def photometric(x: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Random brightness, contrast and gamma per tile (N, H, W) uint8: drone exposures vary
    with sun, haze and camera, and 150 tiles from one survey do not show that variety."""
    n = len(x)
    f = x.astype(np.float32) / np.float32(255)
    gamma = np.exp(rng.uniform(-0.25, 0.25, n) * strength).astype(np.float32)[:, None, None]
    contrast = (1 + rng.uniform(-0.25, 0.25, n) * strength).astype(np.float32)[:, None, None]
    bright = (rng.uniform(-0.12, 0.12, n) * strength).astype(np.float32)[:, None, None]
    f = f**gamma
    mean = f.mean(axis=(1, 2), keepdims=True)
    f = (f - mean) * contrast + mean + bright
    return np.clip(np.rint(f * 255), 0, 255).astype(np.uint8)


def degrade(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random mild blur or sensor noise per tile, and a small zoom: camera focus, ISO and
    flight altitude change from frame to frame."""
    import cv2

    out = np.empty_like(x)
    h, w = x.shape[1:]
    for i, t in enumerate(x):
        r = rng.random()
        if r < 0.25:
            t = cv2.GaussianBlur(t, (0, 0), sigmaX=float(rng.uniform(0.3, 1.0)))
        elif r < 0.5:
            noisy = t.astype(np.float32) + rng.normal(0, rng.uniform(2, 8), t.shape).astype(np.float32)
            t = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        scale = float(rng.uniform(0.9, 1.1))
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, scale)
        out[i] = cv2.warpAffine(t, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return out


def probe_tiles(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Perturbed copies of tiles, the same for a seed: each tile rotated by a free angle, with a
    brightness shift, a contrast change and Gaussian noise (one of each, not compounded). Used to
    check that every engine and precision agrees on tiles no calibration has seen."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = x.shape[1:]
    out = []
    for t in x:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(10, 80)), 1.0)
        out.append(cv2.warpAffine(t, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101))
        f = t.astype(np.float32)
        out.append(np.clip(f + rng.uniform(-40, 40), 0, 255).astype(np.uint8))
        mean = f.mean()
        out.append(np.clip((f - mean) * rng.uniform(0.6, 1.4) + mean, 0, 255).astype(np.uint8))
        out.append(np.clip(np.rint(f + rng.normal(0, 8, f.shape)), 0, 255).astype(np.uint8))
    return np.stack(out)
