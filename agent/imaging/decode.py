"""Safe image decoding: every file a camera or a folder delivers goes through here.

Decoding is defensive because the input is whatever lands in a folder on a drone:

- the size is read from the header and checked against ``max_pixels`` *before* any pixel is
  decoded, so a decompression bomb (a tiny PNG claiming 100000x100000) costs nothing;
- the pixel limit is not a memory limit: a 120 MP 16-bit RGBA PNG is 915 MB decoded (and Pillow
  took the process to 1.55 GB). The decoded size (width x height x channels x bytes per sample,
  from the header) is checked against ``max_decode_bytes`` (``model.max_decode_mb``) before
  decoding too. A PNG over it is decoded straight to 8-bit gray by libpng (OpenCV), which
  converts row by row and never holds the full-depth frame; a JPEG always is (libjpeg converts
  each MCU row). What does not fit even as gray is rejected as ``too_large``;
- JPEGs are decoded by libjpeg-turbo (simplejpeg) in strict mode, where a libjpeg *warning*
  is an error. OpenCV and Pillow both return a half-grey picture for a truncated or damaged
  JPEG without complaint, and the model would then classify the grey;
- big JPEGs are decoded at 1/2, 1/4 or 1/8 size in the DCT when the tile size allows it
  (a 512 px tile becomes a 128 px model input anyway): decoding dominates a 12 MP frame;
- EXIF orientation is applied, so tiles are upright as a person would see them;
- broken EXIF never stops a frame: its pixels may be fine.

Other formats (PNG, TIFF, BMP, WebP, PPM/PGM, ICO) go through Pillow, whose PNG decoder checks
CRCs and reports truncation; a truncated file is never "loaded" (``LOAD_TRUNCATED_IMAGES`` stays
off) and what libtiff complains of is heard (:mod:`agent.imaging.strict`). A valid file in a
variant none of them decodes (12-bit JPEG, LAB TIFF, BMP with a PNG inside) is ``unsupported``
with the variant named, from its header. Quirks that lose no pixel are decoded and listed in
:attr:`DecodedImage.warnings`.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.core.config import ModelConfig
from agent.core.errors import ImageError
from agent.imaging.exif import ExifInfo, apply_orientation, read_exif
from agent.imaging.strict import (
    DecodeWarning,
    check_bmp_supported,
    check_jpeg_supported,
    check_tiff_directory,
    check_tiff_supported,
    container_kind,
    jpeg_frame,
    judge_libtiff,
    libtiff_messages,
    strip_extraneous_bytes,
)

#: formats decoded; anything else Pillow can identify is "unsupported", the rest "not_image"
SUPPORTED_FORMATS = ("jpeg", "png", "tiff", "bmp", "webp", "ppm", "ico")

#: ``model.max_decode_mb``'s default, for callers that do not pass the configured budget
DEFAULT_MAX_DECODE_BYTES = int(ModelConfig.model_fields["max_decode_mb"].default * 1024**2)

#: PNG colour type -> samples per pixel (0 gray, 2 RGB, 3 palette index, 4 gray+alpha, 6 RGBA)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


@dataclass
class DecodedImage:
    """A decoded frame, grayscale and upright, possibly decoded at reduced size."""

    gray: np.ndarray  # uint8 (H, W): EXIF orientation applied; size = original * scale
    width: int  # of the ORIGINAL frame, after orientation
    height: int
    scale: float  # decoded px per original px (1.0, 0.5, 0.25 or 0.125)
    format: str  # one of SUPPORTED_FORMATS
    sha256: str  # hex of the file bytes
    bytes: int  # file size
    exif: ExifInfo = field(default_factory=ExifInfo)
    #: what was odd about a file that still decoded in full (extraneous JPEG bytes, ...)
    warnings: list[DecodeWarning] = field(default_factory=list)


def sniff_format(data: bytes) -> str | None:
    """The image format from the magic bytes, or None when it is no known image format."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[4:8] == b"ftyp":
        return "iso-bmff"  # HEIF/AVIF, or a video or audio file: see container_kind
    if data[:1] == b"P" and data[1:2] in b"123456" and data[2:3] in b" \t\r\n":
        return "ppm"  # PBM, PGM and PPM (Netpbm), ASCII or binary
    if data[:4] == b"\x00\x00\x01\x00" and len(data) >= 6 and data[4:6] != b"\x00\x00":
        return "ico"
    if data[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or data[:4] == b"\xff\x4f\xff\x51":
        return "jpeg2000"
    if data[:2] == b"\xff\x0a" or data[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "jpegxl"
    return None


# ------------------------------------------------------------------------------------ decoding


def reduction_factor(width: int, height: int, tile_px: int, input_px: int) -> int:
    """Largest DCT reduction (1, 2, 4, 8) that keeps every tile at least ``input_px`` decoded.

    A tile is ``tile_px`` original pixels, or the whole side when the image is smaller than a
    tile; decoding it smaller than the model input would throw away detail the model sees.
    """
    side = min(tile_px, width, height)
    for r in (8, 4, 2):
        if side / r >= input_px:
            return r
    return 1


def decode_image(
    data: bytes,
    *,
    tile_px: int,
    input_px: int = 128,
    max_pixels: int,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    camera_timezone: str = "UTC",
    sha256: str | None = None,
) -> DecodedImage:
    """Decode ``data`` to an upright grayscale array, or raise :class:`ImageError`.

    ``sha256``: the hex digest of ``data`` when the caller has it already (the pipeline hashes
    every file for its frame id; hashing a 3.5 MB JPEG again cost 2.7 ms a frame).

    ``max_decode_bytes``: the memory one decode may take (``model.max_decode_mb``), see the
    module docstring.

    Reasons: ``empty``, ``not_image``, ``unsupported``, ``too_large`` (more than
    ``max_pixels``, or more than ``max_decode_bytes`` even as gray), ``corrupt``, ``truncated``.
    """
    if not data:
        raise ImageError("empty", "the file is empty")
    fmt = sniff_format(data)
    if fmt == "iso-bmff":
        fmt = container_kind(data)
        if fmt != "heif/avif":
            raise ImageError("not_image", f"not an image: {fmt}")
    if fmt is None:
        raise ImageError("not_image", "not an image (no known image signature)")
    if fmt not in SUPPORTED_FORMATS:
        raise ImageError("unsupported", f"{fmt} images are not supported (use JPEG, PNG, TIFF, BMP, WebP, PPM/PGM or ICO)")
    exif = read_exif(data, camera_timezone) if fmt in ("jpeg", "tiff", "png", "webp") else ExifInfo()
    gray, notes, stream = None, [], data
    if fmt == "jpeg":
        check_jpeg_supported(jpeg_frame(data))
        stream, notes = strip_extraneous_bytes(data)
        gray, w, h, scale = _decode_jpeg(stream, tile_px, input_px, max_pixels, max_decode_bytes)
    if fmt == "png":
        gray, w, h, scale = _decode_png(data, max_pixels, max_decode_bytes)
    if fmt == "bmp":
        check_bmp_supported(data)
    if fmt == "tiff":
        check_tiff_directory(data)
    if gray is None:
        gray, w, h, scale = _decode_pillow(stream, fmt, tile_px, input_px, max_pixels, max_decode_bytes, notes)
    gray = apply_orientation(gray, exif.orientation)
    if exif.orientation in (5, 6, 7, 8):
        w, h = h, w
    return DecodedImage(
        gray=gray,
        width=w,
        height=h,
        scale=scale,
        format=fmt,
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        exif=exif,
        warnings=notes,
    )


def _check_pixels(w: int, h: int, max_pixels: int) -> None:
    if w <= 0 or h <= 0:
        raise ImageError("corrupt", f"the header gives an impossible size {w}x{h}")
    if w * h > max_pixels:
        raise ImageError(
            "too_large",
            f"{w}x{h} = {w * h / 1e6:.1f} MP exceeds model.max_pixels ({max_pixels / 1e6:.1f} MP); "
            "not decoded (decompression-bomb guard)",
        )


def _check_memory(w: int, h: int, per_px: int, budget: int, what: str) -> None:
    """Refuse, from the header, a decode of ``w`` x ``h`` at ``per_px`` bytes over ``budget``."""
    need = w * h * per_px
    if need > budget:
        raise ImageError(
            "too_large",
            f"{w}x{h} {what} is {need / 1024**2:.0f} MB decoded, more than model.max_decode_mb "
            f"({budget / 1024**2:.0f} MB); not decoded",
        )


def _jpeg_error(msg: str) -> ImageError:
    low = msg.lower()
    # libjpeg says "Corrupt JPEG data: premature end of data segment" for damaged entropy
    # data, and "Premature end of JPEG file" when the file stops early.
    if not low.startswith("corrupt") and ("premature end" in low or "truncat" in low):
        return ImageError("truncated", f"truncated JPEG: {msg}")
    return ImageError("corrupt", f"corrupt JPEG: {msg}")


def _decode_jpeg(data: bytes, tile_px: int, input_px: int, max_pixels: int, budget: int):
    """Strict libjpeg-turbo decode; returns (None, ...) when Pillow should handle it (CMYK)."""
    try:
        import simplejpeg
    except ImportError:  # pragma: no cover - simplejpeg is a dependency; Pillow still works
        return None, 0, 0, 1.0
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as exc:
        raise _jpeg_error(str(exc)) from None
    _check_pixels(w, h, max_pixels)
    if colorspace not in ("Gray", "YCbCr", "RGB"):
        return None, 0, 0, 1.0  # CMYK/YCCK: turbojpeg cannot give gray, Pillow can
    r = reduction_factor(w, h, tile_px, input_px)
    # Only the gray output is ever whole in memory: libjpeg converts the colour per MCU row.
    _check_memory(-(-w // r), -(-h // r), 1, budget, f"JPEG at 1/{r} as 8-bit gray")
    kw = {"min_width": -(-w // r), "min_height": -(-h // r)} if r > 1 else {}
    try:
        arr = simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True, **kw)
    except ValueError as exc:
        if "unsupported" in str(exc).lower():
            return None, 0, 0, 1.0
        raise _jpeg_error(str(exc)) from None
    gray = arr[:, :, 0] if arr.ndim == 3 else arr
    return np.ascontiguousarray(gray), w, h, gray.shape[1] / w


def _decode_png(data: bytes, max_pixels: int, budget: int):
    """PNG by its IHDR: 8-bit gray by the fast paths, a frame over ``budget`` straight to gray,
    else (None, ...) and Pillow decodes it (and names any error)."""
    if len(data) < 26 or data[12:16] != b"IHDR" or data[25] not in _PNG_CHANNELS:
        return None, 0, 0, 1.0  # a broken header: Pillow says what is wrong
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, colour = data[24], data[25]
    _check_pixels(w, h, max_pixels)
    per_px = _PNG_CHANNELS[colour] * (2 if depth == 16 else 1)
    if per_px * w * h > budget:
        _check_memory(w, h, 1, budget, f"PNG ({depth}-bit, colour type {colour}) as 8-bit gray")
        return _decode_png_to_gray(data, w, h)
    if depth == 8 and colour == 0:
        return _decode_png_gray8(data)
    return None, 0, 0, 1.0


def _decode_png_to_gray(data: bytes, w: int, h: int):
    """libpng through OpenCV: strip_16, rgb_to_gray and strip_alpha are applied row by row into
    the gray array, so the full-depth frame is never in memory. Its luma rounds differently
    from Pillow's (by 1 in some pixels): only frames too big for Pillow's decode come here."""
    import cv2  # already loaded by the tiling code in the agent

    gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if gray is None or gray.shape != (h, w):
        if not data.endswith(_PNG_IEND):
            raise ImageError("truncated", f"truncated png: no IEND chunk ({w}x{h} decoded to gray)")
        raise ImageError("corrupt", f"corrupt png: libpng cannot decode this {w}x{h} image")
    return gray, w, h, 1.0


def _decode_png_gray8(data: bytes):
    """Fast paths for 8-bit grayscale PNGs (the aerial tiles): :mod:`agent.imaging.png` (ISA-L inflate,
    2.5x faster than libpng on the shared tiles), else OpenCV, a third faster than Pillow and
    outside the GIL. The pixels are the same. Any failure returns (None, ...) and Pillow
    decodes it and names the error."""
    from agent.imaging.png import decode_gray8

    gray = decode_gray8(data)
    if gray is not None:
        return gray, gray.shape[1], gray.shape[0], 1.0
    import cv2  # already loaded by the tiling code in the agent; imported here to keep this module light

    gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if gray is None:
        return None, 0, 0, 1.0
    return gray, gray.shape[1], gray.shape[0], 1.0


def _decode_pillow(
    data: bytes, fmt: str, tile_px: int, input_px: int, max_pixels: int, budget: int,
    notes: list[DecodeWarning],
):
    """Decode with Pillow, strictly: what it or libtiff reports as lost data raises; its other
    warnings (a damaged EXIF block, an odd tag) are appended to ``notes``."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    # Pillow's one switch for "fill what is missing with grey and say nothing": kept off, even
    # if something else in the process turned it on, or the model classifies the grey.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    if fmt == "png" and len(data) >= 24 and data[12:16] == b"IHDR":
        # Our limit before Pillow's own bomb check, which is fixed at ~179 MP.
        _check_pixels(int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"), max_pixels)
    try:
        with warnings.catch_warnings(record=True) as seen, _libtiff_log(fmt) as tiff_log:
            warnings.simplefilter("always")
            # Our own max_pixels check replaces Pillow's bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            _check_pixels(w, h, max_pixels)
            if fmt == "tiff":
                check_tiff_supported(img.tag_v2)
            if fmt == "jpeg":  # CMYK JPEGs land here; draft still reduces in the DCT
                r = reduction_factor(w, h, tile_px, input_px)
                if r > 1:
                    img.draft("L", (-(-w // r), -(-h // r)))
            # The lazy open has read the header only: mode and (drafted) size, no pixels yet.
            _check_memory(*img.size, _pillow_bytes_per_px(img.mode), budget, f"{fmt} ({img.mode})")
            try:
                img.load()
            except OSError:
                judge_libtiff(tiff_log)  # libtiff's own words beat Pillow's "decoder error -2"
                raise
            notes.extend(judge_libtiff(tiff_log))
            gray = _to_gray(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError("too_large", f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError("corrupt", f"the {fmt} signature is there but the file cannot be read") from None
    except (OSError, EOFError, SyntaxError, ValueError) as exc:
        msg = str(exc)
        if isinstance(exc, EOFError) or "truncated" in msg.lower() or "unexpected end" in msg.lower():
            raise ImageError("truncated", f"truncated {fmt}: {msg or 'unexpected end of file'}") from None
        raise ImageError("corrupt", f"corrupt {fmt}: {msg}") from None
    notes.extend(DecodeWarning(f"{fmt}_warning", str(m.message).strip()) for m in seen)
    return gray, w, h, gray.shape[1] / w


def _libtiff_log(fmt: str):
    """What libtiff reports during the block (TIFF only: nothing else reaches libtiff)."""
    return libtiff_messages() if fmt == "tiff" else nullcontext([])


def _pillow_bytes_per_px(mode: str) -> int:
    """Channels x bytes per sample of a Pillow mode (I;16: 2 bytes, I and F: 4)."""
    from PIL import Image

    if mode.startswith("I;16"):
        return 2
    return 4 if mode in ("I", "F") else Image.getmodebands(mode)


def _to_gray(img) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit sensors: keep the top 8 bits, as an 8-bit camera would have given.
        arr = np.asarray(img).astype(np.uint32)
        arr = arr >> 8 if arr.max(initial=0) > 255 else arr
        return np.clip(arr, 0, 255).astype(np.uint8)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        top = float(arr.max(initial=0.0))
        arr = arr * 255.0 if top <= 1.0 else arr
        return np.clip(arr, 0, 255).astype(np.uint8)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA").convert("RGB")
    # ITU-R 601-2 luma, the same weights as cv2.IMREAD_GRAYSCALE used in training.
    return np.asarray(img.convert("L"), dtype=np.uint8).copy()


def read_image_file(path: str | Path, *, max_file_bytes: int, **decode_kwargs) -> DecodedImage:
    """Read ``path`` once and decode it; ImageError reasons add ``unreadable``, ``file_too_large``."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_file_bytes:
            raise ImageError(
                "file_too_large",
                f"{size / 1e6:.1f} MB exceeds model.max_file_mb ({max_file_bytes / 1e6:.1f} MB)",
            )
        with open(p, "rb") as f:
            # +1: a file that grew past the limit since stat() is still caught
            data = f.read(max_file_bytes + 1)
    except ImageError:
        raise
    except OSError as exc:
        raise ImageError("unreadable", f"cannot read {p}: {exc.strerror or exc}") from None
    if len(data) > max_file_bytes:
        raise ImageError("file_too_large", f"more than model.max_file_mb ({max_file_bytes / 1e6:.1f} MB)")
    return decode_image(data, **decode_kwargs)
