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
