"""agent/imageio.py on real camera files and real aerial tiles: EXIF, orientation, bad input."""

from __future__ import annotations

import io
import struct
import zlib
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from agent.core.errors import ImageError
from agent.imaging.decode import (
    decode_image,
    read_exif,
    read_image_file,
    reduction_factor,
)

KW = {"tile_px": 128, "input_px": 128, "max_pixels": 120_000_000}


def _decode(data: bytes, **kw):
    return decode_image(data, **{**KW, **kw})


def _reason(data: bytes, **kw) -> str:
    with pytest.raises(ImageError) as ei:
        _decode(data, **kw)
    return ei.value.reason


def _pillow_gps(path: Path) -> tuple[float, float]:
    """An independent reading of the GPS IFD with Pillow."""
    gps = Image.open(path).getexif().get_ifd(0x8825)

    def deg(dms, ref):
        v = float(dms[0]) + float(dms[1]) / 60 + float(dms[2]) / 3600
        return -v if ref in ("S", "W") else v

    return deg(gps[2], gps[1]), deg(gps[4], gps[3])


def test_gps_photos_match_an_independent_reading(exif_samples: Path):
    photos = sorted((exif_samples / "gps").glob("*.jpg"))
    assert len(photos) >= 5
    for p in photos:
        data = p.read_bytes()
        info = read_exif(data)
        lat, lon = _pillow_gps(p)
        assert info.lat == pytest.approx(lat, abs=1e-7), p.name
        assert info.lon == pytest.approx(lon, abs=1e-7), p.name
        assert 43 < info.lat < 44 and 11 < info.lon < 12  # Tuscany, N/E refs
        assert info.alt is None  # these photos have no GPSAltitude
        dto = Image.open(p).getexif().get_ifd(0x8769)[36867]
        expected = datetime.strptime(dto, "%Y:%m:%d %H:%M:%S").strftime("%Y-%m-%dT%H:%M:%SZ")
        assert info.captured_at == expected
        decoded = _decode(data)
        assert (decoded.width, decoded.height) == (640, 480)
        assert decoded.exif.lat == info.lat


def test_capture_time_is_read_in_the_camera_timezone(exif_samples: Path):
    data = (exif_samples / "gps" / "DSCN0010.jpg").read_bytes()
    assert read_exif(data).captured_at == "2008-10-22T16:28:39Z"
    # Italy in October 2008 was on CEST (UTC+2): local 16:28 is 14:28 UTC.
    assert read_exif(data, "Europe/Rome").captured_at == "2008-10-22T14:28:39Z"


def _jpeg_with_exif(size=(64, 48), orientation=None, gps=None, dto=None, offset=None) -> bytes:
    im = Image.new("L", size, 128)
    ex = Image.Exif()
    if orientation:
        ex[0x0112] = orientation
    if gps:
        ex.get_ifd(0x8825).update(gps)
    if dto:
        ifd = ex.get_ifd(0x8769)
        ifd[36867] = dto
        if offset:
            ifd[36881] = offset
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=ex.tobytes())
    return buf.getvalue()


def test_southern_western_and_below_sea_level_are_signed():
    data = _jpeg_with_exif(
        gps={1: "S", 2: (33.0, 51.0, 54.5), 3: "W", 4: (151.0, 12.0, 36.0), 5: 1, 6: 12.5},
        dto="2024:02:03 04:05:06",
        offset="+10:00",
    )
    info = read_exif(data, "UTC")
    assert info.lat == pytest.approx(-(33 + 51 / 60 + 54.5 / 3600))
    assert info.lon == pytest.approx(-(151 + 12 / 60 + 36 / 3600))
    assert info.alt == pytest.approx(-12.5)
    # OffsetTimeOriginal wins over the configured zone
    assert info.captured_at == "2024-02-02T18:05:06Z"


def test_orientation_samples_decode_upright(exif_samples: Path):
    base = exif_samples / "orientation"
    upright = _decode((base / "landscape_1.jpg").read_bytes()).gray.astype(np.float64)
    for n in (1, 3, 6, 8):
        path = base / f"landscape_{n}.jpg"
        d = _decode(path.read_bytes())
        assert d.exif.orientation == n
        assert d.gray.shape == upright.shape == (450, 600)
        assert (d.width, d.height) == (600, 450)
        # the same picture as Pillow's exif_transpose gives
        ref = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("L"), dtype=np.float64)
        assert np.abs(d.gray - ref).mean() < 1.0
        # and the same scene as the upright file (different JPEG encodings, so not bit-equal)
        assert np.corrcoef(d.gray.ravel(), upright.ravel())[0, 1] > 0.9
    stored = np.asarray(Image.open(base / "landscape_3.jpg").convert("L"), dtype=np.float64)
    assert np.corrcoef(stored.ravel(), upright.ravel())[0, 1] < 0.5  # orientation did matter


def test_broken_exif_files_still_decode(exif_samples: Path):
    files = sorted((exif_samples / "invalid").glob("*.jpg"))
    assert files
    for p in files:
        d = _decode(p.read_bytes())
        assert d.gray.dtype == np.uint8 and d.gray.size > 0
        assert d.gray.std() > 0  # real pixels, not a grey fill


def test_corrupted_jpeg_is_rejected_as_corrupt(exif_samples: Path):
    assert _reason((exif_samples / "corrupted.jpg").read_bytes(), tile_px=512) == "corrupt"


def test_truncated_jpeg_and_png(exif_samples: Path, aerial_tiles):
    jpeg = (exif_samples / "gps" / "DSCN0021.jpg").read_bytes()
    assert _reason(jpeg[: len(jpeg) // 2]) == "truncated"
    assert _reason(jpeg[:-2]) == "truncated"  # only the EOI marker missing
    png = aerial_tiles["damaged"][0].read_bytes()
    assert _reason(png[: len(png) // 2]) == "truncated"


def test_empty_text_and_unsupported():
    assert _reason(b"") == "empty"
    assert _reason(b"time,lat,lon\n2024-01-01T00:00:00Z,1,2\n") == "not_image"
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "GIF")
    assert _reason(buf.getvalue()) == "unsupported"
    assert _reason(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40) == "corrupt"


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_rejected_before_decoding(exif_samples: Path):
    bomb = _png_header_only(100_000, 100_000)
    assert len(bomb) < 200
    assert _reason(bomb) == "too_large"
    assert _reason(_png_header_only(12_000, 12_000)) == "too_large"  # 144 MP > 120 MP default
    jpeg = (exif_samples / "gps" / "DSCN0010.jpg").read_bytes()
    assert _reason(jpeg, max_pixels=640 * 480 - 1) == "too_large"
    assert _decode(jpeg, max_pixels=640 * 480).width == 640


def test_formats_decode_to_the_same_gray(aerial_tiles):
    ref = np.asarray(Image.open(aerial_tiles["undamaged"][0]).convert("L"))
    for fmt, kw in (("PNG", {}), ("TIFF", {}), ("BMP", {}), ("WEBP", {"lossless": True})):
        buf = io.BytesIO()
        Image.fromarray(ref).convert("RGB").save(buf, fmt, **kw)
        d = _decode(buf.getvalue())
        assert d.format == fmt.lower()
        assert np.array_equal(d.gray, ref), fmt
    buf = io.BytesIO()
    Image.fromarray(ref).save(buf, "JPEG", quality=95)
    d = _decode(buf.getvalue())
    assert d.format == "jpeg" and np.abs(d.gray.astype(int) - ref).mean() < 3


def test_sixteen_bit_png_keeps_the_top_byte(aerial_tiles):
    ref = np.asarray(Image.open(aerial_tiles["damaged"][1]).convert("L")).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ref * 257).save(buf, "PNG")
    assert np.array_equal(_decode(buf.getvalue()).gray, ref.astype(np.uint8))


def test_big_jpeg_uses_reduced_decoding(aerial_tiles, tmp_path: Path):
    tiles = [np.asarray(Image.open(p)) for p in aerial_tiles["undamaged"][:12]]
    mosaic = np.vstack([np.hstack(tiles[r * 4 : r * 4 + 4]) for r in range(3)])  # 512x384
    big = np.asarray(Image.fromarray(mosaic).resize((4096, 3072), Image.BICUBIC))
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, "JPEG", quality=90)
    full = read_image_file(path, max_file_bytes=50_000_000, **{**KW, "tile_px": 128})
    assert full.scale == 1.0 and full.gray.shape == (3072, 4096)
    small = read_image_file(path, max_file_bytes=50_000_000, **{**KW, "tile_px": 1024})
    assert small.scale == 0.125 and small.gray.shape == (384, 512)
    assert (small.width, small.height) == (4096, 3072)
    assert full.sha256 == small.sha256
    # the 1/8 decode is the same picture as the full one shrunk
    shrunk = np.asarray(Image.fromarray(full.gray).resize((512, 384), Image.BOX), dtype=float)
    assert np.abs(small.gray.astype(float) - shrunk).mean() < 4
    assert reduction_factor(4096, 3072, 512, 128) == 4
    assert reduction_factor(640, 480, 4096, 128) == 2  # the whole image is one tile: 480/2 >= 128
    assert reduction_factor(100, 68, 1024, 128) == 1


def test_read_image_file_errors(tmp_path: Path, exif_samples: Path):
    with pytest.raises(ImageError) as ei:
        read_image_file(tmp_path / "missing.jpg", max_file_bytes=10**6, **KW)
    assert ei.value.reason == "unreadable"
    with pytest.raises(ImageError) as ei:
        read_image_file(exif_samples / "corrupted.jpg", max_file_bytes=1000, **KW)
    assert ei.value.reason == "file_too_large"
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError) as ei:
        read_image_file(empty, max_file_bytes=10**6, **KW)
    assert ei.value.reason == "empty"
    d = read_image_file(exif_samples / "Canon_40D.jpg", max_file_bytes=10**6, **KW)
    assert d.bytes == (exif_samples / "Canon_40D.jpg").stat().st_size and len(d.sha256) == 64


def test_truncated_files_stay_truncated_even_if_pillow_was_told_to_load_them(aerial_tiles):
    """LOAD_TRUNCATED_IMAGES fills what is missing with grey; whoever set it, the door refuses."""
    from PIL import ImageFile

    buf = io.BytesIO()
    Image.open(aerial_tiles["damaged"][0]).convert("L").resize((256, 256)).save(buf, "TIFF")
    tif = buf.getvalue()
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        assert _reason(tif[: int(len(tif) * 0.4)]) == "truncated"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before
