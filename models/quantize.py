"""INT8 post-training quantization of the IR with NNCF.

Calibration uses training tiles only (never the held-out ones), with the same u8 / 255 scaling
the engines apply. The caller decides whether the result keeps enough accuracy to ship.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def quantize_int8(xml: Path, calib_tiles_u8: np.ndarray, out_xml: Path, *, seed: int = 0,
                  subset_size: int = 300) -> Path:
    """Quantize the IR at ``xml`` to INT8 and save it to ``out_xml``; return ``out_xml``."""
    import nncf
    import openvino as ov

    rng = np.random.default_rng(seed)
    # Calibration sees each tile plus a rotated/flipped copy: the statistics then cover the
    # orientations a drone camera produces, as training did.
    tiles = np.concatenate([calib_tiles_u8, np.rot90(calib_tiles_u8, 1, axes=(1, 2))[:, :, ::-1]])
    tiles = tiles[rng.permutation(len(tiles))]
    items = [t.astype(np.float32)[None, ..., None] / np.float32(255) for t in tiles]
    model = ov.Core().read_model(str(xml))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(items),
        subset_size=min(subset_size, len(items)),
        preset=nncf.QuantizationPreset.MIXED,
    )
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return Path(out_xml)
