"""The image door against hostile and quirky files (issue 15), every fixture built here in tmp_path.

| fixture                         | must give                     | why                                         |
|---------------------------------|-------------------------------|---------------------------------------------|
| G4 TIFF, strip bytes flipped    | rejected ``corrupt``          | libtiff: "Fax4Decode: Bad code word"; the   |
|                                 |                               | pixels after it are made up                 |
| deflate TIFF cut at 40 %        | rejected ``truncated``        | libtiff: "Read error on strip"; the rest    |
|                                 |                               | would be grey                               |
| tiffcp TIFF cut at 40 %         | rejected ``truncated``        | its directory (written last) is cut off     |
| TIFF, strip byte count > file   | rejected ``truncated``        | the last strip is short                     |
| 12-bit JPEG (SOF1)              | ``unsupported``, "12-bit"     | valid, but libjpeg-turbo's 8-bit API        |
| 16-bit lossless JPEG (SOF3)     | ``unsupported``, "16-bit"     | valid, same                                 |
| 8-bit lossless JPEG (SOF3)      | classified                    | libjpeg-turbo 3 decodes it                  |
| arithmetic JPEG (cjpeg)         | classified                    | libjpeg-turbo decodes it                    |
| LAB TIFF (Photometric 8)        | ``unsupported``, "L*a*b*"     | valid, Pillow cannot make gray of it        |
| WebP-in-TIFF (Compression 50001)| ``unsupported``, "WebP"       | valid, Pillow's libtiff lacks WebP          |
| BMP with BI_JPEG / BI_PNG       | ``unsupported``, "JPEG"/"PNG" | valid printer BMPs Pillow does not unwrap   |
| JPEG, junk before DHT / SOS     | classified + warning          | djpeg decodes it all, warns "extraneous     |
|                                 | ``jpeg_extraneous_bytes``     | bytes"; cameras write such padding          |
| the same, then cut in half      | rejected ``truncated``        | "premature end": pixels are missing         |
| JPEG, APP2 ICC after SOF0       | classified, no warning        | legal marker order (Pillow's icc-after-SOF) |
| PGM, PPM, ICO                   | classified                    | images Pillow reads                         |
| QuickTime M4A (ftyp M4A)        | ``not_image``, "(M4A)"        | audio, not a HEIF image                     |
| HEIC (ftyp heic)                | ``unsupported``               | an image format we do not decode            |
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agent.core.errors import ImageError
from agent.imaging.decode import decode_image

KW = {"tile_px": 128, "input_px": 128, "max_pixels": 120_000_000}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (apt-get install libtiff-tools libjpeg-turbo-progs)")
    return path


def _run(*cmd: str) -> None:
    subprocess.run([_tool(cmd[0]), *cmd[1:]], check=True, capture_output=True)


def _reject(data: bytes) -> ImageError:
    with pytest.raises(ImageError) as ei:
        decode_image(data, **KW)
    return ei.value


@pytest.fixture
def gray(aerial_tiles) -> np.ndarray:
    """A 512x384 aerial picture: big enough for many strips and MCU rows."""
    tile = Image.open(aerial_tiles["damaged"][0]).convert("L")
    return np.asarray(tile.resize((512, 384)))


def _tiff(px: np.ndarray, *, compression: int = 1, photometric: int = 1, rows: int = 16) -> bytes:
    """A little-endian baseline TIFF with its directory first (as cameras write them), strips
    of ``rows`` rows, deflate (8) compressed or raw; ``px`` (H, W) or (H, W, S) uint8."""
    px = px if px.ndim == 3 else px[:, :, None]
    h, w, spp = px.shape
    strips = [px[y : y + rows].tobytes() for y in range(0, h, rows)]
    strips = [zlib.compress(s) if compression == 8 else s for s in strips]
    tags = [(256, [w]), (257, [h]), (258, [8] * spp), (259, [compression]), (262, [photometric]),
            (273, [0] * len(strips)), (277, [spp]), (278, [rows]), (279, [len(s) for s in strips])]
    ifd_end = 8 + 2 + 12 * len(tags) + 4
    ool = [t for t in tags if len(t[1]) > 1]  # values over 4 bytes (LONGs) live after the IFD
    pos = ifd_end + sum(4 * len(v) for _, v in ool)
    offsets = list(np.cumsum([pos] + [len(s) for s in strips[:-1]]))
    tags[5] = (273, offsets)
    out, extra = bytearray(b"II*\x00" + struct.pack("<IH", 8, len(tags))), bytearray()
    for tag, vals in tags:
        if len(vals) > 1:
            out += struct.pack("<HHII", tag, 4, len(vals), ifd_end + len(extra))
            extra += struct.pack(f"<{len(vals)}I", *vals)
        else:
            out += struct.pack("<HHII", tag, 4, 1, vals[0])
    return bytes(out + b"\0\0\0\0" + extra + b"".join(strips))


def _ppm(path: Path, px: np.ndarray) -> None:
    Image.fromarray(px).save(path)


# ------------------------------------------------------------------------------------ rejected


def test_g4_tiff_with_a_damaged_strip_is_corrupt(tmp_path: Path, gray):
    # G4 (CCITT fax) codes bilevel images only: threshold first
    Image.fromarray(gray).point(lambda v: 255 * (v > 110)).convert("1").save(tmp_path / "bw.tif")
    _run("tiffcp", "-c", "g4", str(tmp_path / "bw.tif"), str(tmp_path / "g4.tif"))
    good = (tmp_path / "g4.tif").read_bytes()
    assert decode_image(good, **KW).format == "tiff"
    tags = Image.open(io.BytesIO(good)).tag_v2
    start = tags[273][0] + tags[279][0] // 3
    bad = bytearray(good)
    bad[start : start + 40] = bytes(b ^ 0xFF for b in bad[start : start + 40])
    err = _reject(bytes(bad))
    assert err.reason == "corrupt" and "Fax4Decode" in str(err), err


def test_truncated_tiffs_are_truncated(tmp_path: Path, gray):
    deflate = _tiff(gray, compression=8)
    assert np.array_equal(decode_image(deflate, **KW).gray, gray)
    err = _reject(deflate[: int(len(deflate) * 0.4)])
    assert err.reason == "truncated" and "Read error on strip" in str(err), err
    # the last strip's byte count runs 10 bytes past the end of the file
    err = _reject(deflate[:-10])
    assert err.reason == "truncated", err
    _ppm(tmp_path / "g.tif", gray)
    _run("tiffcp", "-c", "lzw", str(tmp_path / "g.tif"), str(tmp_path / "lzw.tif"))
    lzw = (tmp_path / "lzw.tif").read_bytes()
    err = _reject(lzw[: int(len(lzw) * 0.4)])
    assert err.reason == "truncated" and "past the end" in str(err), err


# ------------------------------------------------------------------------------------ unsupported


def test_high_precision_jpegs_are_unsupported_and_named(gray):
    imagecodecs = pytest.importorskip("imagecodecs")
    twelve = imagecodecs.jpeg8_encode(gray.astype(np.uint16) * 16, bitspersample=12)
    err = _reject(twelve)
    assert err.reason == "unsupported" and "12-bit" in str(err) and "SOF1" in str(err), err
    sixteen = imagecodecs.jpeg8_encode(gray.astype(np.uint16) * 257, lossless=True, bitspersample=16)
    err = _reject(sixteen)
    assert err.reason == "unsupported" and "16-bit lossless" in str(err) and "SOF3" in str(err), err
    lossless = imagecodecs.jpeg8_encode(gray, lossless=True)
    assert np.array_equal(decode_image(lossless, **KW).gray, gray)


def test_arithmetic_jpeg_decodes(tmp_path: Path, gray):
    _ppm(tmp_path / "g.pgm", gray)
    _run("cjpeg", "-arithmetic", "-quality", "95", "-outfile", str(tmp_path / "a.jpg"), str(tmp_path / "g.pgm"))
    d = decode_image((tmp_path / "a.jpg").read_bytes(), **KW)
    assert np.abs(d.gray.astype(int) - gray).mean() < 3


def test_lab_and_webp_tiffs_are_unsupported_and_named(gray):
    lab = np.dstack([gray, np.full_like(gray, 128), np.full_like(gray, 128)])
    err = _reject(_tiff(lab, photometric=8))
    assert err.reason == "unsupported" and "L*a*b*" in str(err), err
    err = _reject(_tiff(gray, compression=50001))
    assert err.reason == "unsupported" and "WebP" in str(err), err


@pytest.mark.parametrize("compression,name", [(4, "JPEG"), (5, "PNG")])
def test_bmp_with_a_jpeg_or_png_payload_is_unsupported(gray, compression, name):
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "BMP")
    bmp = bytearray(buf.getvalue())
    bmp[30:34] = struct.pack("<I", compression)  # biCompression: BI_JPEG or BI_PNG
    err = _reject(bytes(bmp))
    assert err.reason == "unsupported" and f"{name} payload" in str(err), err


# ------------------------------------------------------------------------------------ quirky


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of a JPEG's header segments, up to and with SOS."""
    out, pos = [], 2
    while True:
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        out.append((marker, pos, pos + 2 + length))
        if marker == 0xDA:
            return out
        pos += 2 + length


@pytest.fixture
def cjpeg(tmp_path: Path, gray) -> bytes:
    _ppm(tmp_path / "g.pgm", gray)
    _run("cjpeg", "-quality", "90", "-outfile", str(tmp_path / "g.jpg"), str(tmp_path / "g.pgm"))
    return (tmp_path / "g.jpg").read_bytes()


@pytest.mark.parametrize("marker", [0xC4, 0xDA])
def test_extraneous_bytes_before_a_marker_classify_with_a_warning(tmp_path: Path, cjpeg, marker):
    _, start, _ = next(s for s in _segments(cjpeg) if s[0] == marker)
    quirky = cjpeg[:start] + b"\x00\x11\x22" + cjpeg[start:]
    (tmp_path / "q.jpg").write_bytes(quirky)
    djpeg = subprocess.run([_tool("djpeg"), "-outfile", str(tmp_path / "q.pgm"), str(tmp_path / "q.jpg")],
                           capture_output=True, text=True)
    assert "3 extraneous bytes before marker" in djpeg.stderr  # a warning: djpeg wrote it all
    d = decode_image(quirky, **KW)
    assert np.array_equal(d.gray, decode_image(cjpeg, **KW).gray)
    assert np.array_equal(d.gray, np.asarray(Image.open(tmp_path / "q.pgm")))
    assert [w.reason for w in d.warnings] == ["jpeg_extraneous_bytes"]
    assert f"0x{marker:02x}" in d.warnings[0].message
    assert d.sha256 == hashlib.sha256(quirky).hexdigest()  # of the file as it came
    err = _reject(quirky[: len(quirky) // 2])  # premature end: pixels missing, not padding
    assert err.reason == "truncated", err


def test_icc_profile_after_sof_decodes(cjpeg):
    _, _, sof_end = next(s for s in _segments(cjpeg) if s[0] == 0xC0)
    body = b"ICC_PROFILE\0\x01\x01profile"
    icc = b"\xff\xe2" + struct.pack(">H", len(body) + 2) + body
    d = decode_image(cjpeg[:sof_end] + icc + cjpeg[sof_end:], **KW)
    assert np.array_equal(d.gray, decode_image(cjpeg, **KW).gray) and d.warnings == []


# ------------------------------------------------------------------------------------ naming


def test_netpbm_and_ico_are_images(tmp_path: Path, gray):
    for name, img in (("g.pgm", Image.fromarray(gray)), ("c.ppm", Image.fromarray(gray).convert("RGB"))):
        img.save(tmp_path / name)
        d = decode_image((tmp_path / name).read_bytes(), **KW)
        assert d.format == "ppm" and np.array_equal(d.gray, gray), name
    small = gray[:128, :128]
    Image.fromarray(small).save(tmp_path / "i.ico", sizes=[(128, 128)])
    d = decode_image((tmp_path / "i.ico").read_bytes(), **KW)
    assert d.format == "ico" and np.array_equal(d.gray, small)


def test_an_m4a_is_named_and_a_heic_is_still_unsupported():
    m4a = struct.pack(">I", 28) + b"ftypM4A \x00\x00\x02\x00M4A isommp42" + b"\0" * 64
    err = _reject(m4a)
    assert err.reason == "not_image" and "audio/video container (M4A)" in str(err), err
    heic = struct.pack(">I", 24) + b"ftypheic\x00\x00\x00\x00mif1heic" + b"\0" * 64
    assert _reject(heic).reason == "unsupported"


# ------------------------------------------------------------------------------------ warnings out


def test_warnings_reach_the_frames_table(tmp_path: Path, cjpeg):
    from agent.ingest.job import Job
    from agent.ingest.rows import build_row
    from agent.store.db import Store
    from drivers.base import Frame

    _, start, _ = _segments(cjpeg)[-1]
    quirky = cjpeg[:start] + b"\x00\x11" + cjpeg[start:]
    store = Store(tmp_path / "s.db")
    try:
        rows = []
        for fid, data in (("q", quirky), ("c", cjpeg)):
            job = Job(frame=Frame(flight_id="f", source=fid, path=None), started=time.perf_counter(),
                      frame_id=fid, image=decode_image(data, **KW))
            rows.append(build_row(job, "f", "2024-01-01T00:00:00Z", positions=[], run_id=None))
        store.add_frames(rows)
        assert store.frame("q")["warnings"] == [
            {"reason": "jpeg_extraneous_bytes", "message": rows[0]["warnings"][0]["message"]}
        ]
        raw = store.db.execute("SELECT warnings FROM frames WHERE frame_id IN ('q', 'c') ORDER BY frame_id")
        stored = [r[0] for r in raw]
        assert stored[0] is None and json.loads(stored[1])[0]["reason"] == "jpeg_extraneous_bytes"
    finally:
        store.close()


def test_warnings_are_a_json_column_in_bigquery():
    from sync.schema import FRAME_FIELDS, frame_row

    assert next((n, t) for n, t, *_ in FRAME_FIELDS if n == "warnings") == ("warnings", "JSON")
    w = [{"reason": "jpeg_extraneous_bytes", "message": "2 extraneous bytes before marker 0xda"}]
    row = frame_row({"frame_id": "a", "warnings": w}, "dev", None, None, "2024-01-01T00:00:00Z")
    assert json.loads(row["warnings"]) == w
    assert frame_row({"frame_id": "a"}, "dev", None, None, "2024-01-01T00:00:00Z")["warnings"] is None


def test_classify_json_lists_the_warnings(tmp_path: Path, cjpeg, capsys):
    from agent.cli.main import main

    conf = tmp_path / "skysift.yaml"
    conf.write_text(f"storage:\n  dir: {tmp_path / 'data'}\nmodel:\n  devices: [CPU]\n")
    _, start, _ = _segments(cjpeg)[-1]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "quirky.jpg").write_bytes(cjpeg[:start] + b"\x00\x11" + cjpeg[start:])
    (tmp_path / "in" / "clean.jpg").write_bytes(cjpeg)
    assert main(["-c", str(conf), "classify", "--json", str(tmp_path / "in")]) == 0
    rows = {Path(r["path"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["clean.jpg"]["warnings"] == []
    assert rows["quirky.jpg"]["error"] is None
    assert [w["reason"] for w in rows["quirky.jpg"]["warnings"]] == ["jpeg_extraneous_bytes"]
    assert "2 extraneous bytes before marker 0xda" in rows["quirky.jpg"]["warnings"][0]["message"]


def test_warnings_migration_is_idempotent(tmp_path: Path):
    import sqlite_utils

    from agent.store.db import Store
    from agent.store.migrations import MIGRATIONS

    Store(tmp_path / "s.db").close()
    db = sqlite_utils.Database(tmp_path / "s.db")
    step = next(m for m in MIGRATIONS if m.__name__ == "_m5_frame_warnings")
    step(db)  # run again on a file that has the column: no error, one column
    assert list(db["frames"].columns_dict).count("warnings") == 1
    db.conn.close()
