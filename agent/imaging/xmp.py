"""XMP packet reading: where a drone was and which way its camera looked, in one convention.

Vendors write the pose in XMP under their own names and conventions; each one is converted here,
once, to the internal convention (DJI's), so nothing downstream knows which drone took the frame:

- yaw: degrees clockwise from true north, in [0, 360);
- pitch: degrees, -90 straight down, 0 the horizon;
- roll: degrees, 0 = image rows level, positive = the camera turned clockwise as seen from behind
  (its right side down, like an aircraft's right wing).

Converters (the namespace URI is what counts, never the prefix):

- DJI ``drone-dji:`` GpsLatitude/GpsLongitude (older firmware, and Autel's copy of the format,
  spell it ``GpsLongtitude``), AbsoluteAltitude, RelativeAltitude (above the take-off point),
  Gimbal{Yaw,Pitch,Roll}Degree, FlightYawDegree, CalibratedFocalLength and
  CalibratedOpticalCenterX/Y (pixels), DewarpData (kept as text). Already the internal convention.
- Skydio ``drone-skydio:`` Latitude/Longitude/AbsoluteAltitude and the CameraOrientationNED
  struct {Yaw, Pitch, Roll}: the internal convention.
- Parrot ``drone-parrot:`` Camera{Yaw,Pitch,Roll}Degree: the internal convention.
- Pix4D/senseFly (and old Autel) ``Camera:`` (http://pix4d.com/camera/1.0/) Yaw/Pitch/Roll:
  ``Camera:Pitch`` 0 is nadir and 90 the horizon, so internal pitch = Camera:Pitch - 90.
  ``Camera:AboveGroundAltitude`` (Parrot) is a rational "a/b" in metres.
- ``exif:`` GPSLatitude/GPSLongitude ("DD,MM.mmmmN" or "DD,MM,SSN"), GPSAltitude ("a/b") with
  GPSAltitudeRef (1 = below sea level).

Vertical datum: every altitude called "above sea level" here (AbsoluteAltitude, GPSAltitude) is
taken as orthometric, in the same vertical datum as the DEM it is compared with; no geoid model
is applied. A DEM on another datum gives heights above ground off by the geoid separation.

Untrusted input: the packet is parsed with defusedxml (entities and DTDs refused, so an XML bomb
costs an exception, not the memory) after a size cap. Nothing here raises on a bad packet: the
field is None and a :class:`GeoWarning` says why.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

MAX_XMP_BYTES = 256 * 1024  # one JPEG APP1 segment holds < 64 KiB; ExtendedXMP is not read
_APP1_XMP = b"http://ns.adobe.com/xap/1.0/\x00"

NS_DJI = "http://www.dji.com/drone-dji/1.0/"
NS_SKYDIO = "https://www.skydio.com/drone-skydio/1.0/"
NS_PARROT = "http://www.parrot.com/drone-parrot/1.0/"
NS_PIX4D = "http://pix4d.com/camera/1.0/"
NS_EXIF = "http://ns.adobe.com/exif/1.0/"
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"


@dataclass(frozen=True)
class GeoWarning:
    """Why a geometry field is None: a stable ``reason`` code and a message for people."""

    reason: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message}


@dataclass
class XmpInfo:
    """What the XMP packet says, converted to the internal convention. Every field may be None."""

    lat: float | None = None
    lon: float | None = None
    alt_msl: float | None = None  # orthometric metres (AbsoluteAltitude, exif:GPSAltitude)
    rel_alt: float | None = None  # metres above the take-off point (drone-dji:RelativeAltitude)
    agl: float | None = None  # metres above ground as the drone measured it (Camera:AboveGround...)
    yaw: float | None = None  # camera (gimbal) angles, internal convention
    pitch: float | None = None
    roll: float | None = None
    flight_yaw: float | None = None  # the airframe's heading, when the gimbal's is absent
    vendor: str | None = None  # which converter gave the angles: dji, skydio, parrot, pix4d
    focal_px: float | None = None  # DJI CalibratedFocalLength (pixels)
    cx: float | None = None  # DJI CalibratedOpticalCenterX/Y (pixels)
    cy: float | None = None
    dewarp: str | None = None  # DJI DewarpData, as written
    warnings: list[GeoWarning] = field(default_factory=list)


def find_packet(data: bytes) -> bytes | None:
    """The XMP packet of a file: the JPEG APP1 XMP segment, else the first ``<x:xmpmeta>``."""
    if data[:2] == b"\xff\xd8":
        pos = 2
        while pos + 4 <= len(data) and data[pos] == 0xFF:
            marker, size = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
            if marker == 0xDA:  # start of scan: no metadata after it
                break
            body = data[pos + 4 : pos + 2 + size]
            if marker == 0xE1 and body.startswith(_APP1_XMP):
                return body[len(_APP1_XMP) :]
            pos += 2 + size
    start = data.find(b"<x:xmpmeta")
    if start < 0:
        return None
    head = data.rfind(b"<?xpacket begin", 0, start)  # keep a DOCTYPE before the root: refuse it
    end = data.find(b"</x:xmpmeta>", start)
    return data[head if head >= 0 else start : len(data) if end < 0 else end + 12]


def parse_properties(packet: bytes) -> dict[tuple[str, str], str]:
    """Every simple property of the packet as {(namespace URI, name): text}; struct fields are
    named ``Struct/Field``. Raises ValueError on a packet that is too large or not safe XML."""
    if len(packet) > MAX_XMP_BYTES:
        raise ValueError(f"XMP packet of {len(packet)} bytes exceeds {MAX_XMP_BYTES}")
    import defusedxml.ElementTree as safe_et
    from defusedxml import DefusedXmlException

    try:
        root = safe_et.fromstring(packet.strip(b"\x00 \r\n\t"))
    except DefusedXmlException as exc:
        raise ValueError(f"XMP refused: {type(exc).__name__}") from exc
    except Exception as exc:  # ElementTree.ParseError and friends: malformed XML
        raise ValueError(f"XMP malformed: {exc}") from exc
    props: dict[tuple[str, str], str] = {}
    for desc in root.iter(f"{{{_RDF}}}Description"):
        _collect(desc, "", props)
    return props


def _split(tag: str) -> tuple[str, str]:
    uri, _, name = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    return uri, name


def _collect(elem, prefix: str, props: dict[tuple[str, str], str]) -> None:
    for key, value in elem.attrib.items():
        uri, name = _split(key)
        if uri != _RDF:
            props.setdefault((uri, prefix + name), value)
    for child in elem:
        uri, name = _split(child.tag)
        if uri == _RDF:  # rdf:Description inside a struct: its fields belong to the parent
            _collect(child, prefix, props)
        elif len(child):
            _collect(child, f"{prefix}{name}/", props)
        elif child.text and child.text.strip():
            props.setdefault((uri, prefix + name), child.text.strip())
        else:
            _collect(child, f"{prefix}{name}/", props)  # a struct given as attributes


def number(text: str | None) -> float | None:
    """A finite float from "12.5", "+12.5" or a rational "a/b"; None for anything else."""
    if text is None:
        return None
    try:
        num, slash, den = text.strip().partition("/")
        value = float(num) / float(den) if slash else float(num)
    except (ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


_XMP_GPS = re.compile(r"^\s*(\d+(?:\.\d+)?),(\d+(?:\.\d+)?)(?:,(\d+(?:\.\d+)?))?\s*([NSEW])\s*$")


def xmp_gps_coordinate(text: str | None) -> float | None:
    """XMP-exif GPSCoordinate "DDD,MM.mmmk" or "DDD,MM,SSk" (k = N/S/E/W) as signed degrees."""
    m = _XMP_GPS.match(text or "")
    if not m:
        return number(text)  # some writers put plain decimal degrees
    deg = float(m[1]) + float(m[2]) / 60 + (float(m[3]) / 3600 if m[3] else 0.0)
    return -deg if m[4] in "SW" else deg


def _angles(props, vendor: str, names: tuple[str, str, str], pitch_offset: float = 0.0):
    uri = {"dji": NS_DJI, "skydio": NS_SKYDIO, "parrot": NS_PARROT, "pix4d": NS_PIX4D}[vendor]
    yaw, pitch, roll = (number(props.get((uri, n))) for n in names)
    if pitch is not None:
        pitch += pitch_offset
    return yaw, pitch, roll


_ANGLE_SOURCES = (  # first vendor whose pitch is present wins
    ("dji", ("GimbalYawDegree", "GimbalPitchDegree", "GimbalRollDegree"), 0.0),
    ("skydio", ("CameraOrientationNED/Yaw", "CameraOrientationNED/Pitch",
                "CameraOrientationNED/Roll"), 0.0),
    ("parrot", ("CameraYawDegree", "CameraPitchDegree", "CameraRollDegree"), 0.0),
    ("pix4d", ("Yaw", "Pitch", "Roll"), -90.0),  # Camera:Pitch 0 = nadir
)


def check_angles(yaw, pitch, roll, warnings: list[GeoWarning], where: str):
    """Absurd angles become None with a warning; yaw is brought into [0, 360)."""
    if pitch is not None and not -180.0 <= pitch <= 180.0:
        warnings.append(GeoWarning("absurd_pitch", f"{where} pitch {pitch:g} deg is out of range"))
        pitch = None
    if roll is not None and not -180.0 <= roll <= 180.0:
        warnings.append(GeoWarning("absurd_roll", f"{where} roll {roll:g} deg is out of range"))
        roll = None
    if yaw is not None and not -720.0 <= yaw <= 720.0:
        warnings.append(GeoWarning("absurd_yaw", f"{where} yaw {yaw:g} deg is out of range"))
        yaw = None
    return (None if yaw is None else yaw % 360.0), pitch, roll


def _position(props, info: XmpInfo) -> None:
    lon_dji = props.get((NS_DJI, "GpsLongitude")) or props.get((NS_DJI, "GpsLongtitude"))
    for lat_t, lon_t, alt_t in (
        (props.get((NS_DJI, "GpsLatitude")), lon_dji, props.get((NS_DJI, "AbsoluteAltitude"))),
        (props.get((NS_SKYDIO, "Latitude")), props.get((NS_SKYDIO, "Longitude")),
         props.get((NS_SKYDIO, "AbsoluteAltitude"))),
    ):
        lat, lon = number(lat_t), number(lon_t)
        if lat is not None and lon is not None:
            info.lat, info.lon, info.alt_msl = lat, lon, number(alt_t)
            break
    else:
        info.lat = xmp_gps_coordinate(props.get((NS_EXIF, "GPSLatitude")))
        info.lon = xmp_gps_coordinate(props.get((NS_EXIF, "GPSLongitude")))
        alt = number(props.get((NS_EXIF, "GPSAltitude")))
        if alt is not None and props.get((NS_EXIF, "GPSAltitudeRef"), "0").strip() == "1":
            alt = -alt
        info.alt_msl = alt
    bad = (info.lat is not None and not -90 <= info.lat <= 90) or (
        info.lon is not None and not -180 <= info.lon <= 180
    )
    if bad:
        info.warnings.append(GeoWarning("absurd_position", "XMP position is out of range"))
    if bad or info.lat is None or info.lon is None:
        info.lat = info.lon = None  # half a position is no position


def read_xmp(data: bytes) -> XmpInfo:
    """Read a file's (or a bare packet's) XMP pose. Never raises: a bad packet gives an empty
    XmpInfo with a warning, and a bad value costs only its field."""
    info = XmpInfo()
    packet = find_packet(data)
    if packet is None:
        return info
    try:
        props = parse_properties(packet)
    except ValueError as exc:
        info.warnings.append(GeoWarning("xmp_unreadable", str(exc)))
        return info
    _position(props, info)
    info.rel_alt = number(props.get((NS_DJI, "RelativeAltitude")))
    info.agl = number(props.get((NS_PIX4D, "AboveGroundAltitude")))
    for vendor, names, offset in _ANGLE_SOURCES:
        yaw, pitch, roll = _angles(props, vendor, names, offset)
        if pitch is not None:
            info.vendor = vendor
            info.yaw, info.pitch, info.roll = check_angles(yaw, pitch, roll, info.warnings, vendor)
            break
    info.flight_yaw, _, _ = check_angles(
        number(props.get((NS_DJI, "FlightYawDegree"))), None, None, info.warnings, "flight"
    )
    info.focal_px = number(props.get((NS_DJI, "CalibratedFocalLength")))
    info.cx = number(props.get((NS_DJI, "CalibratedOpticalCenterX")))
    info.cy = number(props.get((NS_DJI, "CalibratedOpticalCenterY")))
    info.dewarp = props.get((NS_DJI, "DewarpData"))
    return info
