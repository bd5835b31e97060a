"""The PNG fast path (agent/png.py) gives OpenCV's pixels exactly, or steps aside."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from agent.imaging.decode import decode_image
from agent.imaging.png import decode_gray8


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _encode(img: np.ndarray, filters: list[int], *, depth: int = 8, colour: int = 0, split: int = 0) -> bytes:
    """A PNG whose rows use the given filters (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth)."""
    h, w = img.shape
    x = img.astype(np.int16)
    rows = []
    for i in range(h):
        left = np.concatenate([[0], x[i, :-1]])
        up = x[i - 1] if i else np.zeros(w, np.int16)
        f = filters[i]
        if f == 0:
            d = x[i]
        elif f == 1:
            d = x[i] - left
        elif f == 2:
            d = x[i] - up
        else:  # 3: Average of the left and upper original pixels
            d = x[i] - (left + up) // 2
        rows.append(bytes([f]) + (d % 256).astype(np.uint8).tobytes())
    z = zlib.compress(b"".join(rows))
    idats = [z] if not split else [z[i : i + split] for i in range(0, len(z), split)]
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0))
        + b"".join(_chunk(b"IDAT", c) for c in idats)
        + _chunk(b"tEXt", b"Comment\x00ancillary chunks are skipped")
        + _chunk(b"IEND", b"")
    )


def _cv2(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)


def test_every_shared_tile_decodes_to_opencvs_pixels(aerial_tiles):
    paths = aerial_tiles["damaged"] + aerial_tiles["undamaged"]
    for path in paths:
        data = path.read_bytes()
        fast = decode_gray8(data)
        assert fast is not None, path  # the shared tiles are all on the fast path
        assert fast.dtype == np.uint8 and np.array_equal(fast, _cv2(data)), path


def test_mixed_none_sub_up_rows_match_opencv():
    rng = np.random.default_rng(7)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        img = rng.integers(0, 256, (h, w), dtype=np.uint8)
        filters = [int(f) for f in rng.integers(0, 3, h)]
        data = _encode(img, filters, split=int(rng.integers(0, 64)))
        assert np.array_equal(_cv2(data), img)  # the test's encoder is right
        fast = decode_gray8(data)
        assert fast is not None and np.array_equal(fast, img), filters


@pytest.mark.parametrize("case", ["average", "depth16", "rgb", "bad_crc", "truncated", "bad_zlib", "short", "no_iend"])
def test_anything_else_steps_aside(case):
    img = np.arange(64, dtype=np.uint8).reshape(8, 8)
    if case == "average":
        data = _encode(img, [1, 3, 1, 1, 1, 1, 1, 1])
    elif case == "depth16":
        data = _encode(img, [0] * 8, depth=16)
    elif case == "rgb":
        data = _encode(img, [0] * 8, colour=2)
    else:
        data = bytearray(_encode(img, [1] * 8))
        idat = data.index(b"IDAT")
        if case == "bad_crc":
            data[idat + 6] ^= 0xFF  # a flipped byte in the compressed data: the CRC fails
        elif case == "bad_zlib":
            # damaged compressed data whose chunk CRC was recomputed: inflate or Adler-32 fails
            n = struct.unpack(">I", data[idat - 4 : idat])[0]
            body = bytearray(data[idat + 4 : idat + 4 + n])
            body[len(body) // 2] ^= 0xFF
            data[idat + 4 : idat + 4 + n] = body
            data[idat + 4 + n : idat + 8 + n] = struct.pack(">I", zlib.crc32(b"IDAT" + bytes(body)))
        elif case == "truncated":
            data = data[: len(data) // 2]
        elif case == "short":
            data = data[:20]
        elif case == "no_iend":
            data = data[: data.index(b"IEND") - 4]
        data = bytes(data)
    assert decode_gray8(data) is None


def test_a_deflate_bomb_is_not_inflated_past_the_header_size():
    # A 16x16 image whose IDAT inflates to 200 MB: valid CRCs, valid zlib stream.
    body = zlib.compress(b"\x00" * 200_000_000, 9)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 0, 0, 0, 0))
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )
    import tracemalloc

    tracemalloc.start()
    try:
        assert decode_gray8(data) is None
        peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()
    assert peak_mb < 10, f"{peak_mb:.0f} MB allocated decoding a 16x16 PNG"


def test_fuzzed_tiles_never_crash_and_never_disagree_with_opencv(aerial_tiles):
    rng = np.random.default_rng(3)
    paths = aerial_tiles["damaged"][:10] + aerial_tiles["undamaged"][:10]
    for path in paths:
        good = path.read_bytes()
        for _ in range(25):
            data = bytearray(good)
            for pos in rng.integers(0, len(data), int(rng.integers(1, 4))):
                data[pos] = int(rng.integers(0, 256))
            fast = decode_gray8(bytes(data))
            if fast is not None:  # only when every CRC still holds: then it is OpenCV's picture
                ref = _cv2(bytes(data))
                assert ref is not None and np.array_equal(fast, ref)


def test_the_agent_still_names_what_is_wrong_with_a_damaged_png(aerial_tiles):
    data = bytearray(aerial_tiles["damaged"][0].read_bytes())
    data = bytes(data[: len(data) * 2 // 3])
    from agent.core.errors import ImageError

    with pytest.raises(ImageError) as err:
        decode_image(data, tile_px=128, max_pixels=10_000_000)
    assert err.value.reason in ("truncated", "corrupt")
