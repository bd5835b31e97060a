"""Strictness at the image door: name what cannot be decoded, hear what the decoders complain of.

Two jobs, both before or around the decode in :mod:`agent.imaging.decode`:

- **Naming from headers.** A valid file in a variant the decoders lack (a 12-bit JPEG, a LAB
  TIFF, a BMP wrapping a PNG) is ``unsupported`` with the variant named, read from the header
  before any pixel is decoded, instead of the ``corrupt`` the failed decode would suggest.
- **libtiff's complaints.** Pillow decodes compressed TIFFs with libtiff and returns whatever
  libtiff produced: a CCITT strip with bad code words decodes "successfully" with its damage
  printed to stderr ("Fax4Decode: Bad code word") and never seen by the caller. Here libtiff's
  error and warning handlers are replaced by ones that record each message for the thread that
  is decoding, so the decode can reject what lost data.

Quirks that cost no pixel (extraneous bytes between JPEG markers) are removed and reported as
:class:`DecodeWarning`: the frame is classified and its row says what was odd about it.
"""

from __future__ import annotations

import ctypes
import logging
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from agent.core.errors import ImageError

log = logging.getLogger(__name__)


class DecodeWarning(NamedTuple):
    """Something odd about a file that was decoded in full: a short code and what was seen."""

    reason: str
    message: str


# ------------------------------------------------------------------------------------ JPEG

#: SOF markers: 0xC0 + n -> the JPEG process of frame type n
_SOF_NAMES = {
    0: "baseline", 1: "extended sequential", 2: "progressive", 3: "lossless",
    5: "differential sequential", 6: "differential progressive", 7: "differential lossless",
    9: "arithmetic sequential", 10: "arithmetic progressive", 11: "arithmetic lossless",
    13: "differential arithmetic sequential", 14: "differential arithmetic progressive",
    15: "differential arithmetic lossless",
}
_HIERARCHICAL = {5, 6, 7, 13, 14, 15}
_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn stand alone


class JpegFrame(NamedTuple):
    """What a JPEG's SOF marker says: its frame type (SOFn), sample precision and size."""

    sof: int
    precision: int
    width: int
    height: int

    @property
    def name(self) -> str:
        return f"{self.precision}-bit {_SOF_NAMES[self.sof]} JPEG (SOF{self.sof})"


def jpeg_frame(data: bytes) -> JpegFrame | None:
    """The first SOF of ``data``, walking the marker segments; None when none is found."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            pos += 1  # extraneous bytes: libjpeg skips them (and warns), so does this walk
            continue
        marker = data[pos + 1]
        if marker == 0xFF or marker in _NO_LENGTH:
            pos += 1 if marker == 0xFF else 2
            continue
        if marker in (0xD9, 0xDA):
            return None  # the scan (or the end) before any frame header
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        sof = marker - 0xC0
        if sof in _SOF_NAMES and pos + 9 <= len(data):
            precision, h, w = struct.unpack(">BHH", data[pos + 4 : pos + 9])
            return JpegFrame(sof, precision, w, h)
        pos += 2 + length
    return None


def check_jpeg_supported(frame: JpegFrame | None) -> None:
    """Raise ``unsupported`` for a JPEG process libjpeg-turbo cannot decode to 8-bit gray.

    libjpeg-turbo decodes 8-bit baseline, progressive, arithmetic and lossless frames; 12- and
    16-bit samples need its separate 12/16-bit API, which no Python binding here exposes, and
    hierarchical (differential) JPEG it does not implement at all.
    """
    if frame is None:
        return
    if frame.precision != 8 or frame.sof in _HIERARCHICAL:
        raise ImageError("unsupported", f"{frame.name} is not supported (8-bit JPEGs are)")


def strip_extraneous_bytes(data: bytes) -> tuple[bytes, list[DecodeWarning]]:
    """``data`` without the junk bytes between its header's marker segments, and a warning each.

    libjpeg skips such bytes itself and warns "N extraneous bytes before marker 0xXX"; in strict
    mode the warning is an error. They are common in camera files (padding after an APP
    segment) and cost no pixel, so they are cut out and the cleaned stream decoded strictly:
    anything else wrong with it still fails. Only the header, up to the first SOS, is walked:
    junk inside entropy-coded data is damage, not padding.
    """
    keep, found = [slice(0, 2)], []
    pos = 2
    while pos < len(data):
        start = pos
        while pos < len(data) and data[pos] != 0xFF:
            pos += 1
        while pos + 1 < len(data) and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes (0xFF 0xFF ...) are allowed before a marker
        if pos + 1 >= len(data):
            return data, []  # no further marker: not ours to mend
        marker = data[pos + 1]
        if pos > start:
            found.append(DecodeWarning(
                "jpeg_extraneous_bytes",
                f"{pos - start} extraneous bytes before marker 0x{marker:02x} (skipped; the image "
                "decoded in full)",
            ))
        if marker in (0xD9, 0xDA) or marker in _NO_LENGTH:
            keep.append(slice(pos, None))
            break
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        keep.append(slice(pos, end))
        pos = end
    if not found:
        return data, []  # the common case: no copy of a 3.5 MB frame
    return b"".join(data[k] for k in keep), found


# ------------------------------------------------------------------------------------ TIFF, BMP


#: TIFF Compression values Pillow's libtiff cannot decode, by name
_TIFF_COMPRESSIONS = {50001: "WebP", 50000: "Zstandard", 34887: "LERC", 34933: "PNG", 34934: "JPEG XR"}
#: TIFF Photometric values Pillow cannot turn into gray
_TIFF_PHOTOMETRIC = {8: "CIE L*a*b*", 9: "ICC L*a*b*", 10: "ITU L*a*b*", 32844: "LogL", 32845: "LogLuv"}


def check_tiff_supported(tags) -> None:
    """Raise ``unsupported`` for a TIFF whose compression or colour space Pillow cannot decode.

    ``tags``: Pillow's ``tag_v2`` of the opened image (read from the IFD, no pixel decoded).
    """
    compression, photometric = tags.get(259), tags.get(262)
    if compression in _TIFF_COMPRESSIONS:
        name = _TIFF_COMPRESSIONS[compression]
        raise ImageError("unsupported", f"{name}-compressed TIFF (Compression {compression}) is not supported")
    if photometric in _TIFF_PHOTOMETRIC:
        name = _TIFF_PHOTOMETRIC[photometric]
        raise ImageError("unsupported", f"{name} TIFF (Photometric {photometric}) is not supported")


def check_tiff_directory(data: bytes) -> None:
    """Raise ``truncated`` when the first TIFF directory lies past the end of ``data``.

    Writers put the directory after the strips, so a file cut short loses it first, and Pillow
    then says only that it "cannot identify" the file.
    """
    if data[:2] not in (b"II", b"MM") or data[2:4] not in (b"*\x00", b"\x00*"):
        return  # BigTIFF: Pillow names its own errors
    offset = int.from_bytes(data[4:8], "little" if data[:2] == b"II" else "big")
    if offset + 2 > len(data):
        raise ImageError(
            "truncated",
            f"truncated tiff: the image directory at byte {offset} lies past the end of the file "
            f"({len(data)} bytes)",
        )


#: BMP biCompression values that wrap another format's stream
_BMP_PAYLOADS = {4: "JPEG", 5: "PNG"}


def check_bmp_supported(data: bytes) -> None:
    """Raise ``unsupported`` for a BMP that carries a JPEG or PNG stream (BI_JPEG, BI_PNG):
    meant for printers, and Pillow does not unwrap them."""
    if len(data) < 34 or int.from_bytes(data[14:18], "little") < 40:
        return  # an OS/2 BITMAPCOREHEADER has no compression field
    compression = int.from_bytes(data[30:34], "little")
    if compression in _BMP_PAYLOADS:
        name = _BMP_PAYLOADS[compression]
        raise ImageError("unsupported", f"BMP with a {name} payload (BI_{name}) is not supported")


#: ISO base media major/compatible brands that mean a HEIF/AVIF still image
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}


def container_kind(data: bytes) -> str:
    """``heif/avif`` for an ISO base media file holding images, else what the container is."""
    size = int.from_bytes(data[:4], "big")
    brands = [data[8:12]] + [data[i : i + 4] for i in range(16, min(size, 64, len(data)), 4)]
    if any(b in _HEIF_BRANDS for b in brands):
        return "heif/avif"
    major = data[8:12].decode("latin-1").strip() or "unknown"
    return f"an audio/video container ({major})"


# ------------------------------------------------------------------------------------ libtiff


class TiffMessage(NamedTuple):
    error: bool  # TIFFError, else TIFFWarning
    module: str
    text: str


_local = threading.local()
_installed: bool | None = None  # None: not tried yet; False: this Pillow's libtiff was not found
_install_lock = threading.Lock()
_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)
_handlers: list = []  # the ctypes callbacks must outlive every libtiff call


def _record(error: bool):
    libc = ctypes.CDLL(None)
    libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]

    def handler(module: bytes | None, fmt: bytes, args: int) -> None:
        # va_list reaches the callback as a pointer (x86-64: an array; AArch64: a 32-byte
        # struct passed by reference) and is handed on as one to vsnprintf.
        buf = ctypes.create_string_buffer(512)
        libc.vsnprintf(buf, len(buf), fmt, args)
        msg = TiffMessage(error, (module or b"").decode(errors="replace"), buf.value.decode(errors="replace"))
        sink = getattr(_local, "messages", None)
        if sink is None:
            log.debug("libtiff outside a decode: %s: %s", msg.module, msg.text)
        else:
            sink.append(msg)

    return _HANDLER(handler)


def _pillow_libtiff() -> str | None:
    """The path of the libtiff Pillow's ``_imaging`` is linked against, from the process map."""
    import PIL._imaging  # noqa: F401 - loads the libtiff in question

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libtiff" in line and "/" in line}
    except OSError:
        return None
    ours = [p for p in paths if "pillow" in p.lower() or "/PIL/" in p]
    return (ours or sorted(paths) or [None])[0]


def _install() -> bool:
    global _installed
    with _install_lock:
        if _installed is None:
            path = _pillow_libtiff()
            _installed = False
            if path is None:
                log.warning("libtiff not found: TIFF decoder errors cannot be checked")
            else:
                lib = ctypes.CDLL(path)
                for setter, error in ((lib.TIFFSetErrorHandler, True), (lib.TIFFSetWarningHandler, False)):
                    setter.argtypes, setter.restype = [_HANDLER], ctypes.c_void_p
                    _handlers.append(_record(error))
                    setter(_handlers[-1])
                _installed = True
        return _installed


@contextmanager
def libtiff_messages() -> Iterator[list[TiffMessage]]:
    """Collect what libtiff reports while this thread decodes inside the block."""
    _install()
    messages: list[TiffMessage] = []
    _local.messages = messages
    try:
        yield messages
    finally:
        _local.messages = None


#: libtiff warnings that mean pixels were lost or made up, not a metadata oddity
_LOST_DATA = ("premature", "mismatch", "truncat", "not enough", "read error")


def judge_libtiff(messages: list[TiffMessage]) -> list[DecodeWarning]:
    """Raise for libtiff messages that mean lost data; the rest become warnings."""
    lost = [m for m in messages if m.error or any(k in m.text.lower() for k in _LOST_DATA)]
    if lost:
        first = lost[0]
        text = f"{first.module}: {first.text}" + (f" (and {len(lost) - 1} more)" if len(lost) > 1 else "")
        low = first.text.lower()
        cut = "read error" in low or "premature end" in low or "truncat" in low or "not enough data" in low
        raise ImageError("truncated" if cut else "corrupt", f"{'truncated' if cut else 'corrupt'} tiff: {text}")
    return [DecodeWarning("tiff_warning", f"{m.module}: {m.text}") for m in messages]
