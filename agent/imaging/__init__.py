"""Turning a file into pixels, a capture time and a position: safe decoding, EXIF, geotagging.
OpenCV, Pillow and simplejpeg are imported inside the functions that need them."""

from agent.imaging.decode import (
    SUPPORTED_FORMATS,
    DecodedImage,
    ExifInfo,
    decode_image,
    read_exif,
    read_image_file,
)
from agent.imaging.geotag import (
    Position,
    PositionSource,
    Track,
    TrackFile,
    geotag,
    iso_utc,
    parse_time,
    shift,
)
from agent.imaging.srt import SrtError, SrtTracks, parse_srt, read_srt
from agent.imaging.strict import DecodeWarning

__all__ = [
    "SUPPORTED_FORMATS",
    "DecodeWarning",
    "DecodedImage",
    "ExifInfo",
    "Position",
    "PositionSource",
    "SrtError",
    "SrtTracks",
    "Track",
    "TrackFile",
    "decode_image",
    "geotag",
    "iso_utc",
    "parse_srt",
    "parse_time",
    "read_exif",
    "read_image_file",
    "read_srt",
    "shift",
]
