"""Decode memory is bounded by model.max_decode_mb, not only the pixel count by model.max_pixels.

A 1 MB PNG of 11000x10900 16-bit RGBA (just under max_pixels) is 915 MB decoded; Pillow took
`skysift classify` to 1.55 GB RSS on it. Now it is decoded straight to 8-bit gray (~430 MB).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from agent.core.errors import ImageError
from agent.imaging.decode import _to_gray, decode_image

KW = {"tile_px": 128, "input_px": 128, "max_pixels": 120_000_000}
MB = 1024**2


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(w: int, h: int, depth: int, colour: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _write_big_rgba16(path: Path, w: int = 11000, h: int = 10900) -> None:
    """A real 16-bit RGBA PNG, written row by row (Up filter, so it deflates to ~1 MB) without
    ever holding the 915 MB frame: R and B ramp down the rows, G across, alpha opaque."""
    x = np.linspace(0, 65535, w).astype(">u2")
    z = zlib.compressobj(6)
    parts, prev = [], np.zeros(w * 8, np.uint8)
    for y in range(h):
        px = np.empty((w, 4), ">u2")
        px[:, 0], px[:, 1], px[:, 2], px[:, 3] = y * 6, x, 65535 - y * 6, 65535
        row = px.view(np.uint8).reshape(-1)
        parts.append(z.compress(b"\x02" + (row - prev).tobytes()))  # Up: the byte above
        prev = row
    parts.append(z.flush())
    path.write_bytes(_png(w, h, 16, 6, b"".join(parts)))


# The child reports its own peak (VmHWM of its own address space) at exit. Not wait4's
# ru_maxrss: Linux carries the parent's high-water mark into a child across fork/vfork + exec,
# so a pytest process that grew to 1.7 GB in earlier tests (TensorFlow) made every child look
# that big.
_PEAK_RUNNER = (
    "import atexit, runpy, sys\n"
    "dest = sys.argv[1]\n"
    "def _peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            open(dest, 'w').write(line.split()[1])\n"
    "atexit.register(_peak)\n"
    "sys.argv = ['skysift'] + sys.argv[2:]\n"
    "runpy.run_module('agent', run_name='__main__')\n"
)


def _classify_peak(path: Path) -> tuple[dict, int]:
    """`skysift classify --json` in a child: (its result row, its own peak RSS in bytes)."""
    out, peak = path.with_suffix(".json"), path.with_suffix(".peak")
    with open(out, "wb") as f:
        child = subprocess.run(
            [sys.executable, "-c", _PEAK_RUNNER, str(peak), "classify", "--json", str(path)],
            stdout=f, stderr=subprocess.DEVNULL, env=os.environ.copy(), timeout=600,
        )
    assert child.returncode == 0, out.read_text()
    return json.loads(out.read_text().splitlines()[0]), int(peak.read_text()) * 1024


@pytest.mark.slow
def test_big_sixteen_bit_rgba_png_is_classified_in_bounded_memory(tmp_path: Path):
    path = tmp_path / "big16.png"
    _write_big_rgba16(path)
    assert path.stat().st_size < 5 * MB
    row, peak = _classify_peak(path)
    assert row["error"] is None and row["label"] in ("damaged", "undamaged")
    assert row["tiles"] == 86 * 86  # ceil(11000/128) x ceil(10900/128): the full-size frame
    assert peak < 900 * MB, f"peak RSS {peak / MB:.0f} MB"


def test_header_declared_huge_image_refused_before_any_allocation():
    # 11000x10900 16-bit RGBA: 915 MB decoded, 114 MB even as gray; the IDAT is 20 bytes.
    bomb = _png(11000, 10900, 16, 6, zlib.compress(b"\0" * 64))
    tracemalloc.start()
    try:
        with pytest.raises(ImageError) as ei:
            decode_image(bomb, **KW, max_decode_bytes=100 * MB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ei.value.reason == "too_large"
    assert "114 MB" in str(ei.value) and "max_decode_mb (100 MB)" in str(ei.value)
    assert peak < MB  # not a row of it was allocated: a decode attempt would say corrupt


def test_tiff_over_the_budget_is_rejected_and_under_it_decoded():
    rgb = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "TIFF")
    with pytest.raises(ImageError) as ei:
        decode_image(buf.getvalue(), **KW, max_decode_bytes=200 * 300 * 3 - 1)
    assert ei.value.reason == "too_large"
    d = decode_image(buf.getvalue(), **KW, max_decode_bytes=200 * 300 * 3)
    assert np.array_equal(d.gray, np.asarray(Image.fromarray(rgb).convert("L")))


def test_png_over_the_budget_is_decoded_straight_to_gray():
    rgba = np.random.default_rng(2).integers(0, 65536, (200, 300, 4), dtype=np.uint16)
    data = cv2.imencode(".png", rgba)[1].tobytes()
    ref = _to_gray(Image.open(io.BytesIO(data)))  # what the full decode gives
    full = decode_image(data, **KW, max_decode_bytes=200 * 300 * 8)
    assert np.array_equal(full.gray, ref)
    gray = decode_image(data, **KW, max_decode_bytes=200 * 300 * 8 - 1)
    assert gray.gray.shape == (200, 300) and (gray.width, gray.height, gray.scale) == (300, 200, 1.0)
    assert np.abs(gray.gray.astype(int) - ref).max() <= 1  # libpng's luma rounds differently
    with pytest.raises(ImageError) as ei:
        decode_image(data, **KW, max_decode_bytes=200 * 300 - 1)
    assert ei.value.reason == "too_large"
    with pytest.raises(ImageError) as ei:
        decode_image(data[: len(data) // 2], **KW, max_decode_bytes=200 * 300)
    assert ei.value.reason == "truncated"


def test_jpeg_budget_counts_the_gray_output_at_its_reduction(exif_samples: Path):
    jpeg = (exif_samples / "gps" / "DSCN0010.jpg").read_bytes()  # 640x480 colour
    assert decode_image(jpeg, **KW, max_decode_bytes=640 * 480).gray.shape == (480, 640)
    with pytest.raises(ImageError) as ei:
        decode_image(jpeg, **KW, max_decode_bytes=640 * 480 - 1)
    assert ei.value.reason == "too_large"
    # tile 1024: decoded at 1/2 in the DCT, so a quarter of the budget is enough
    assert decode_image(jpeg, **{**KW, "tile_px": 1024}, max_decode_bytes=320 * 240).scale == 0.5
