"""Turning a file into pixels, a capture time and a position: safe decoding, EXIF, geotagging,
and where on the ground the frame lies (XMP pose, camera model, DEM, ray casting).
OpenCV, Pillow, simplejpeg and rasterio are imported inside the functions that need them."""

from agent.imaging.camera import (
    CameraExif,
    CameraOverrides,
    Intrinsics,
    intrinsics,
    read_camera_exif,
)
from agent.imaging.decode import (
    SUPPORTED_FORMATS,
    DecodedImage,
    ExifInfo,
    decode_image,
    read_exif,
    read_image_file,
)
from agent.imaging.dem import (
    Dem,
    DemError,
    FlatGround,
    Terrain,
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
    telemetry_at,
)
from agent.imaging.ground import (
    bench_us,
    frame_corners,
    ground_points,
    tile_centres,
)
from agent.imaging.pose import (
    FramePose,
    PoseConfig,
    Telemetry,
    frame_pose,
)
from agent.imaging.srt import (
    SrtError,
    SrtTracks,
    parse_srt,
    read_srt,
)
from agent.imaging.strict import (
    DecodeWarning,
)
from agent.imaging.xmp import (
    GeoWarning,
    XmpInfo,
    read_xmp,
)

__all__ = [
    "CameraExif",
    "CameraOverrides",
    "DecodeWarning",
    "DecodedImage",
    "Dem",
    "DemError",
    "ExifInfo",
    "FlatGround",
    "FramePose",
    "GeoWarning",
    "Intrinsics",
    "PoseConfig",
    "Position",
    "PositionSource",
    "SUPPORTED_FORMATS",
    "SrtError",
    "SrtTracks",
    "Telemetry",
    "Terrain",
    "Track",
    "TrackFile",
    "XmpInfo",
    "bench_us",
    "decode_image",
    "frame_corners",
    "frame_pose",
    "geotag",
    "ground_points",
    "intrinsics",
    "iso_utc",
    "parse_srt",
    "parse_time",
    "read_camera_exif",
    "read_exif",
    "read_image_file",
    "read_srt",
    "read_xmp",
    "shift",
    "telemetry_at",
    "tile_centres",
]
