"""Benchmark workloads: folders of images made from the shared aerial tiles.

Two workloads, as the agent meets them in the field:

- ``tiles``: 128x128 grayscale PNG tiles, the shared set repeated to N files. Each copy has one
  pixel changed so its sha256 (and so its frame_id) differs: the agent classifies an image once
  per content, and N copies of 200 files would otherwise be 200 frames.
- ``frames``: 4000x3000 colour JPEGs of about 3.5 MB, the size a 12 MP drone camera writes.
  Each is a mosaic of shared tiles upscaled to ``tile_px`` pixels (so a frame holds
  (4000/tile_px) x (3000/tile_px) tiles the model can classify, 48 at 500 px) with a colour cast
  and sensor noise; the noise is what brings a JPEG to a camera's file size, and JPEG decoding
  cost grows with it. Frames are made distinct by an EXIF block (GPS position and capture time,
  different for every frame) and a DJI-style XMP packet (the gimbal pose, so the frames are
  located on the ground as a drone's are) spliced into a few distinct encoded mosaics, which is
  what a camera does too and costs no re-encoding.

Workloads are cached in a work directory with a manifest, so repeated runs reuse them.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

FRAME_W, FRAME_H = 4000, 3000
TARGET_FRAME_BYTES = 3_500_000
#: distinct encoded mosaics behind the frames workload (each frame adds its own EXIF)
FRAME_BASES = 24
MANIFEST = "workload.json"


@dataclass
class Workload:
    """A folder of benchmark images. ``root`` is the watched folder (``<work>/inbox``, holding
    nothing else); images sit in one flight subfolder ``root/<flight>``."""

    kind: str  # "tiles" | "frames"
    root: Path
    flight: str
    files: list[Path]
    tile_px: int
    bytes_total: int
    meta: dict

    @property
    def n(self) -> int:
        return len(self.files)


def shared_tiles(data_dir: Path) -> list[tuple[Path, str]]:
    """(path, label) of every shared aerial tile, damaged first, sorted by name."""
    out: list[tuple[Path, str]] = []
    for label in ("damaged", "undamaged"):
        out += [(p, label) for p in sorted((data_dir / label).glob("*.png"))]
    if not out:
        raise FileNotFoundError(f"{data_dir}: no damaged/*.png or undamaged/*.png tiles")
    return out


def _cached(out: Path, spec: dict) -> Workload | None:
    root = out / "inbox"
    try:
        m = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if m.get("spec") != spec:
        return None
    files = [root / m["flight"] / name for name in m["files"]]
    if not all(f.exists() for f in files):
        return None
    return Workload(spec["kind"], root, m["flight"], files, spec["tile_px"], m["bytes_total"], m["meta"])


def _write_manifest(w: Workload, spec: dict) -> None:
    # beside the watched folder, not in it: the agent would take it for a frame
    m = {
        "spec": spec,
        "flight": w.flight,
        "files": [f.name for f in w.files],
        "bytes_total": w.bytes_total,
        "meta": w.meta,
    }
    (w.root.parent / MANIFEST).write_text(json.dumps(m))


def make_tiles(data_dir: Path, out: Path, n: int) -> Workload:
    """``n`` distinct 128x128 PNG tiles: the shared tiles repeated, one pixel changed per copy."""
    spec = {"kind": "tiles", "n": n, "tile_px": 128, "v": 1}
    if (w := _cached(out, spec)) is not None:
        return w
    src = shared_tiles(data_dir)
    flight = "bench-tiles"
    d = out / "inbox" / flight
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("*.png"):
        old.unlink()
    images = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p, _ in src]
    files: list[Path] = []
    total = 0
    for i in range(n):
        j = i % len(src)
        img = images[j]
        copy = i // len(src)
        if copy:
            img = img.copy()
            # Copy k changes pixel (k mod 128, k // 128 mod 128) by +-1: invisible to the model,
            # but a different file, as a second photo of the same place would be.
            y, x = (copy // 128) % 128, copy % 128
            img[y, x] = img[y, x] + 1 if img[y, x] < 255 else 254
        path = d / f"{i:06d}-{src[j][1][0]}-{src[j][0].stem}.png"
        ok, buf = cv2.imencode(".png", img)
        if not ok:
            raise RuntimeError(f"PNG encoding failed for {path}")
        path.write_bytes(buf.tobytes())
        total += len(buf)
        files.append(path)
    w = Workload("tiles", out / "inbox", flight, files, 128, total, {"source_tiles": len(src), "format": "png"})
    _write_manifest(w, spec)
    log.info("wrote %d tiles (%.1f MB) to %s", n, total / 1e6, d)
    return w


def make_big_png(out: Path, width: int = 11_000, height: int = 10_900) -> Workload:
    """One PNG of ``width`` x ``height`` RGBA at 16 bits a sample, just under ``model.max_pixels``:
    a ~1 MB file that decodes to 915 MB at full depth, the memory case of issue 14."""
    spec = {"kind": "big_png", "width": width, "height": height, "v": 1}
    if (w := _cached(out, spec)) is not None:
        return w
    flight = "bench-big-png"
    d = out / "inbox" / flight
    d.mkdir(parents=True, exist_ok=True)
    # A smooth gradient compresses to about a megabyte; built one band at a time, since the full
    # 16-bit RGBA array is the very allocation the agent must avoid (the bench should not hold
    # it either while the agent runs).
    rows = np.linspace(0, 65535, height, dtype=np.uint16)[:, None]
    cols = np.linspace(0, 65535, width, dtype=np.uint16)[None, :]
    img = np.empty((height, width, 4), np.uint16)
    img[..., 0] = rows
    img[..., 1] = cols
    img[..., 2] = 32768
    img[..., 3] = 65535
    path = d / "rgba16-11000x10900.png"
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    del img
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    path.write_bytes(buf.tobytes())
    w = Workload("big_png", out / "inbox", flight, [path], 128, len(buf), {"format": "png", "bits": 16, "channels": 4})
    _write_manifest(w, spec)
    log.info("wrote a %dx%d 16-bit RGBA PNG (%.1f MB) to %s", width, height, len(buf) / 1e6, path)
    return w


def _mosaic(images: list[np.ndarray], rng: np.random.Generator, tile_px: int) -> np.ndarray:
    """A 4000x3000 BGR frame tiled with upscaled shared tiles, a colour cast and sensor noise."""
    cols, rows = -(-FRAME_W // tile_px), -(-FRAME_H // tile_px)
    gray = np.empty((rows * tile_px, cols * tile_px), np.uint8)
    for r in range(rows):
        for c in range(cols):
            t = images[rng.integers(len(images))]
            t = np.rot90(t, rng.integers(4))  # aerial: any rotation is a plausible view
            gray[r * tile_px : (r + 1) * tile_px, c * tile_px : (c + 1) * tile_px] = cv2.resize(
                np.ascontiguousarray(t), (tile_px, tile_px), interpolation=cv2.INTER_CUBIC
            )
    gray = gray[:FRAME_H, :FRAME_W]
    # Colour: a warm daylight cast per frame, so the chroma planes carry real information.
    cast = rng.uniform([0.85, 0.95, 1.0], [0.95, 1.0, 1.15])
    bgr = gray[:, :, None].astype(np.float32) * cast.astype(np.float32)
    noise = rng.normal(0.0, 3.0, size=(FRAME_H, FRAME_W, 1)).astype(np.float32)
    chroma = rng.normal(0.0, 1.0, size=(FRAME_H, FRAME_W, 3)).astype(np.float32)
    bgr += noise + chroma
    return np.clip(bgr, 0, 255).astype(np.uint8)


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _tune_quality(img: np.ndarray, target: int) -> tuple[int, int]:
    """The JPEG quality whose file size is closest to ``target`` bytes (bisection on 50..100)."""
    lo, hi = 50, 100
    best = (hi, len(_jpeg(img, hi)))
    while lo <= hi:
        q = (lo + hi) // 2
        size = len(_jpeg(img, q))
        if abs(size - target) < abs(best[1] - target):
            best = (q, size)
        if size < target:
            lo = q + 1
        else:
            hi = q - 1
    return best


def exif_block(lat: float, lon: float, alt: float, when: datetime, index: int) -> bytes:
    """A JPEG APP1 segment with EXIF GPS (lat/lon/alt with refs) and DateTimeOriginal."""
    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    def dms(v: float) -> tuple:
        v = abs(v)
        d = int(v)
        m = int((v - d) * 60)
        s = round(((v - d) * 60 - m) * 60 * 1000)
        return (IFDRational(d, 1), IFDRational(m, 1), IFDRational(s, 1000))

    exif = Image.Exif()
    exif[0x010F] = "skysift-bench"  # Make
    exif[0x0110] = "synthetic 12MP"  # Model
    exif[0x0131] = f"frame {index}"  # Software: keeps every frame's bytes distinct
    ifd = exif.get_ifd(0x8769)  # Exif IFD
    ifd[0x9003] = when.strftime("%Y:%m:%d %H:%M:%S")  # DateTimeOriginal
    gps = exif.get_ifd(0x8825)
    gps[1] = "N" if lat >= 0 else "S"
    gps[2] = dms(lat)
    gps[3] = "E" if lon >= 0 else "W"
    gps[4] = dms(lon)
    gps[5] = 0
    gps[6] = IFDRational(round(alt * 100), 100)
    payload = exif.tobytes()  # starts with b"Exif\0\0"
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def xmp_block(lat: float, lon: float, msl: float, agl: float, yaw: float, pitch: float) -> bytes:
    """A JPEG APP1 XMP segment as a DJI drone writes it: position, altitudes, gimbal pose and
    the calibrated focal length, so the bench's frames are located as a drone's would be."""
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        'xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" '
        f'drone-dji:GpsLatitude="{lat:.7f}" drone-dji:GpsLongitude="{lon:.7f}" '
        f'drone-dji:AbsoluteAltitude="{msl:+.2f}" drone-dji:RelativeAltitude="{agl:+.2f}" '
        f'drone-dji:GimbalYawDegree="{yaw:+.1f}" drone-dji:GimbalPitchDegree="{pitch:+.1f}" '
        f'drone-dji:GimbalRollDegree="+0.0" drone-dji:FlightYawDegree="{yaw:+.1f}" '
        'drone-dji:CalibratedFocalLength="3000.0"/></rdf:RDF></x:xmpmeta>'
        '<?xpacket end="w"?>'
    ).encode()
    body = b"http://ns.adobe.com/xap/1.0/\x00" + packet
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def _with_exif(jpeg: bytes, app1: bytes) -> bytes:
    # EXIF belongs right after SOI; drop the encoder's JFIF APP0 so the file looks like a camera's.
    assert jpeg[:2] == b"\xff\xd8"
    rest = jpeg[2:]
    if rest[:2] == b"\xff\xe0":
        (seg_len,) = struct.unpack(">H", rest[2:4])
        rest = rest[2 + seg_len :]
    return b"\xff\xd8" + app1 + rest


def make_frames(data_dir: Path, out: Path, n: int, tile_px: int = 500, seed: int = 0) -> Workload:
    """``n`` distinct 4000x3000 JPEG frames of about 3.5 MB with EXIF GPS and DJI XMP pose."""
    spec = {"kind": "frames", "n": n, "tile_px": tile_px, "seed": seed, "v": 2}  # v2: DJI XMP
    if (w := _cached(out, spec)) is not None:
        return w
    src = shared_tiles(data_dir)
    images = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p, _ in src]
    rng = np.random.default_rng(seed)
    flight = "bench-frames"
    d = out / "inbox" / flight
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("*.jpg"):
        old.unlink()
    bases: list[bytes] = []
    quality = None
    for _ in range(min(n, FRAME_BASES)):
        img = _mosaic(images, rng, tile_px)
        if quality is None:
            quality, _size = _tune_quality(img, TARGET_FRAME_BYTES)
        bases.append(_jpeg(img, quality))
    t0 = datetime(2026, 2, 6, 9, 30, 0, tzinfo=timezone.utc)
    files: list[Path] = []
    total = 0
    for i in range(n):
        # A lawnmower survey over a city block: ~10 m between frames, one frame every 2 s.
        lat = 37.5850 + (i // 40) * 0.0001
        lon = 36.9300 + (i % 40) * 0.0001 * (1 if (i // 40) % 2 == 0 else -1)
        yaw = 90.0 if (i // 40) % 2 == 0 else 270.0  # along the survey line
        app1 = exif_block(lat, lon, 120.0, t0 + timedelta(seconds=2 * i), i)
        data = _with_exif(bases[i % len(bases)], app1 + xmp_block(lat, lon, 120.0, 80.0, yaw, -80.0))
        path = d / f"DJI_{i:05d}.jpg"
        path.write_bytes(data)
        total += len(data)
        files.append(path)
    meta = {
        "width": FRAME_W,
        "height": FRAME_H,
        "jpeg_quality": quality,
        "distinct_mosaics": len(bases),
        "tiles_per_frame": (-(-FRAME_W // tile_px)) * (-(-FRAME_H // tile_px)),
        "mean_bytes": total // max(n, 1),
        "format": "jpeg",
        "exif_gps": True,
        "xmp_pose": True,
    }
    w = Workload("frames", out / "inbox", flight, files, tile_px, total, meta)
    _write_manifest(w, spec)
    log.info("wrote %d frames (%.1f MB each, quality %s) to %s", n, total / max(n, 1) / 1e6, quality, d)
    return w
