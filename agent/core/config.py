"""The one YAML configuration file: defaults in code, validated once, unknown keys rejected.

Every key has a default here, so an empty file (or no file) is a working configuration: watch
``./inbox``, keep results in ``./skysift-data``, no cloud, no MQTT. Errors name the dotted key
path (``model.devices[1]``) and what is wrong, and ``skysift config check`` exits 1 on them.
Every number is finite and bounded, a key written twice is an error (:mod:`agent.core.yamlfile`),
and :func:`check_paths` checks on disk the files and folders named (:mod:`agent.core.config_paths`).

Secrets never live in the YAML: passwords and credentials are *file paths*; the files may sit in
systemd's ``$CREDENTIALS_DIRECTORY`` (see :func:`agent.core.config_paths.resolve_secret_path`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agent.core.config_errors import format_errors, report

# the geotag and camera sections live in their own module; other rooms import them from here.
from agent.core.config_geo import CameraConfig, GeotagConfig
from agent.core.config_geo import CameraModelConfig as CameraModelConfig
from agent.core.config_log import LogConfig

# resolve_secret_path lives with the other path lookups; other rooms import it from here.
from agent.core.config_paths import path_problems, resolve_relative_paths
from agent.core.config_paths import resolve_secret_path as resolve_secret_path
from agent.core.config_tak import TakConfig
from agent.core.config_values import (
    DAY_S,
    Section,
    check_device,
    check_extension,
    check_host,
    check_listen,
    check_topic_prefix,
)
from agent.core.errors import ConfigError
from agent.core.yamlfile import load_yaml

# Upper bounds: a value past these is a typo, and some would crash at run time (a wait of .inf
# seconds or int(1e308 MB) raises OverflowError deep inside a thread).
#: MQTT's keep-alive is a 16-bit field; paho's thread dies on a larger one
MQTT_KEEPALIVE_MAX = 65_535
#: SD-card files that are no frames; DNG too: DJI writes a JPEG twin, and a DNG reads as a TIFF
DEFAULT_IGNORE_EXTENSIONS = (
    ".srt", ".xmp", ".txt", ".lrf", ".lrv", ".thm", ".mp4", ".mov", ".avi", ".mkv", ".insv",
    ".dng", ".raw", ".cr2", ".nef", ".arw", ".gpx", ".kml", ".csv", ".json", ".log", ".dat",
    ".xml", ".html", ".md", ".pdf", ".wav", ".mp3", ".aac",
)


class SourceConfig(Section):
    folder: Path | None = Field(
        default=None,
        description="Watched folder. Each subfolder is a flight; files directly in the root "
        "belong to the flight named after the root folder. Default when no source is set: ./inbox",
    )
    camera: str | int | None = Field(
        default=None,
        description="OpenCV source: device index (0), video file path, or RTSP/HTTP stream URL.",
    )
    settle_seconds: float = Field(
        default=2.0, ge=0, le=DAY_S,
        description="A file is read once unchanged (size, mtime) for this long.",
    )
    rescan_seconds: float = Field(
        default=30.0, gt=0, le=DAY_S,
        description="Full rescan interval: file watchers can miss events.",
    )
    ignore_extensions: list[Annotated[str, AfterValidator(check_extension)]] = Field(
        default_factory=lambda: list(DEFAULT_IGNORE_EXTENSIONS), max_length=200,
        description="Files with these extensions (any case) are never frames: skipped, "
        "counted in one INFO line per scan. DJI .SRT logs are read as tracks (geotag.srt).",
    )
    flight_idle_s: float = Field(
        default=600.0, ge=0, le=DAY_S,
        description="A folder flight ends after this long without new files (0: only at stop).",
    )
    unreadable_give_up_s: float = Field(
        default=3600.0, ge=0, le=30 * DAY_S,
        description="A file that cannot be read is retried for this long, then stored as rejected.",
    )
    camera_every_n: int = Field(
        default=1, ge=1, le=1_000_000,
        description="Keep every Nth camera frame.",
    )
    camera_max_fps: float | None = Field(
        default=None, gt=0, le=10_000,
        description="Keep at most this many camera frames per second.",
    )
    camera_reopen_max_s: float = Field(
        default=30.0, gt=0, le=DAY_S,
        description="Cap of the backoff when a lost stream is reopened.",
    )
    queue_size: int = Field(
        default=64, ge=1, le=100_000, description="Bounded queue between source and model."
    )

    @model_validator(mode="after")
    def _one_source(self) -> SourceConfig:
        if self.folder is not None and self.camera is not None:
            raise ValueError("set either source.folder or source.camera, not both")
        return self


class StorageConfig(Section):
    dir: Path = Field(default=Path("skysift-data"), description="Database, frames and state.")
    max_gb: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="Disk budget. When reached, synced images are deleted oldest first; "
        "unsynced data is never deleted and ingest pauses instead.",
    )
    min_free_mb: float = Field(
        default=200.0, ge=0, le=100_000_000,
        description="Ingest pauses when the disk has less free space.",
    )


Precision = Literal["auto", "f32", "bf16", "f16", "int8"]


class ModelConfig(Section):
    path: Path | None = Field(
        default=None, description="Model directory with model_card.json. Default: shipped model."
    )
    engine: Literal["auto", "openvino", "tensorflow"] = "auto"
    devices: list[Annotated[str, AfterValidator(check_device)]] = Field(
        default_factory=lambda: ["GPU", "NPU", "CPU"],
        description="OpenVINO device priority list, e.g. [MYRIAD, GPU, NPU, CPU] or [AUTO].",
    )
    precision: Precision = Field(
        default="auto",
        description="auto (the INT8 IR when the model card shows it as accurate as the float "
        "one, else the device's own choice), f32, bf16, f16, or int8 (the INT8 IR).",
    )
    tile_px: int = Field(
        default=128, ge=16, le=8192, description="Frames larger than one tile are cut into tiles of this size."
    )
    damaged_fraction: float = Field(
        default=0.0, ge=0, lt=1,
        description="A frame is damaged when more than this fraction of its tiles is damaged "
        "(0: any damaged tile).",
    )
    # 16, not 64: OpenVINO keeps activations for the whole batch (64 tiles of the first conv
    # output alone are ~260 MB in f32); 16 keeps the agent under 300 MB RSS at no measured cost
    # in frames/s (docs/benchmarks.md).
    batch_size: int = Field(default=16, ge=1, le=4096)
    # throughput: one OpenVINO stream per core group, batches of a frame in parallel (1.7x the
    # tiles/s of latency on 2 cores); latency: one stream using every core, for one tile at a time.
    performance_hint: Literal["throughput", "latency"] = "throughput"
    cache_dir: Path | None = Field(
        default=None, description="OpenVINO compiled-model cache. Default: <storage.dir>/ov-cache."
    )
    max_pixels: int = Field(
        default=120_000_000, ge=1, le=10_000_000_000,
        description="Decompression-bomb guard: larger images are rejected.",
    )
    max_file_mb: float = Field(
        default=200.0, gt=0, le=1_000_000,
        description="Larger files are rejected.",
    )
    # 128: a frame at max_pixels decoded to 8-bit gray is 114 MB; with the model loaded that
    # keeps the agent under 700 MB RSS (docs in agent/imaging/decode.py).
    max_decode_mb: float = Field(
        default=128.0, ge=1, le=65536,
        description="Memory one decode may take (width x height x channels x bytes per sample, "
        "from the header). Larger PNG and JPEG frames are decoded straight to 8-bit gray if "
        "that fits; others are rejected.",
    )

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: list[str]) -> list[str]:
        # Each entry is already checked and upper-cased by check_device.
        if not v:
            raise ValueError("list at least one device, e.g. [CPU]")
        return v


class ReportConfig(Section):
    basemap: Path | None = Field(
        default=None, description="Your own raster MBTiles file, drawn under the frames (offline)."
    )
    thumb_px: int = Field(default=256, ge=32, le=2048, description="Long side of mosaic images.")


class GcsConfig(Section):
    bucket: str | None = None
    prefix: str = "skysift"
    endpoint: str | None = Field(default=None, description="e.g. an emulator's http://127.0.0.1:4443")


class BigQueryConfig(Section):
    project: str | None = None
    dataset: str = "skysift"
    table: str = "frames"
    endpoint: str | None = None
    location: str | None = None
    # Load jobs per table per day are a fixed quota: pacing them bounds a device's jobs per day.
    min_interval_s: float = Field(default=0.0, ge=0, le=DAY_S)
    max_rows: int = Field(default=10_000, ge=1, le=1_000_000)
    quota_window_s: float | None = Field(default=None, gt=0, le=DAY_S)
    method: Literal["load_jobs", "write_api"] = "load_jobs"  # see sync/write_api.py


class SyncConfig(Section):
    gcs: GcsConfig = Field(default_factory=GcsConfig)
    bigquery: BigQueryConfig = Field(default_factory=BigQueryConfig)
    upload_images: Literal["all", "damaged", "none"] = "damaged"
    credentials_file: Path | None = Field(
        default=None, description="Service-account JSON. Default: application-default credentials."
    )
    interval_s: float = Field(
        default=30.0, gt=0, le=DAY_S,
        description="Timer wake-up of the sync loop.",
    )
    batch_rows: int = Field(default=500, ge=1, le=50_000)
    backoff_max_s: float = Field(default=300.0, gt=0, le=DAY_S)


class MqttTlsConfig(Section):
    # TLS is on only with a CA (certificates are always verified); a client certificate is
    # loaded with its key (paho's tls_set(certfile, keyfile)), so the three go together.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @field_validator("cert_file")
    @classmethod
    def _cert_needs_ca(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is not None and info.data.get("ca_file") is None:
            raise ValueError(
                "a client certificate needs mqtt.tls.ca_file (TLS is on only with a CA)"
            )
        return v

    @field_validator("key_file")
    @classmethod
    def _key_with_cert(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if "cert_file" not in info.data:
            return v  # cert_file itself is invalid and reported
        if (v is None) != (info.data["cert_file"] is None):
            raise ValueError("set mqtt.tls.cert_file and key_file together, or neither")
        return v


class MqttConfig(Section):
    host: Annotated[str, AfterValidator(check_host)] | None = Field(
        default=None, description="No host: MQTT is off."
    )
    port: int = Field(default=1883, ge=1, le=65535)
    topic_prefix: Annotated[str, AfterValidator(check_topic_prefix)] = "skysift"
    client_id: str | None = None
    qos: Literal[0, 1, 2] = 1
    keepalive: int = Field(default=30, ge=5, le=MQTT_KEEPALIVE_MAX)
    username: str | None = None
    password_file: Path | None = Field(
        default=None, description="Password file; or the SKYSIFT_MQTT_PASSWORD environment variable."
    )
    tls: MqttTlsConfig = Field(default_factory=MqttTlsConfig)
    telemetry_topic: str | None = None
    telemetry_max_age_s: float = Field(default=5.0, gt=0, le=DAY_S)
    homeassistant_discovery: bool = False
    homeassistant_prefix: Annotated[str, AfterValidator(check_topic_prefix)] = "homeassistant"
    outbox_max_rows: int | None = Field(default=None, ge=1, le=100_000_000)
    flight_summary_interval_s: float = Field(default=5.0, gt=0, le=DAY_S)
    drain_s: float = Field(
        default=5.0, ge=0, le=600, description="At stop, seconds to send what is still owed."
    )
    command_key_file: Path | None = Field(
        default=None, description="Shared HMAC key: commands must be signed (agent.live.auth)."
    )
    command_max_age_s: float = Field(default=30.0, gt=0, le=3600)
    command_rate: float = Field(default=1.0, gt=0, le=100)
    command_burst: int = Field(default=5, ge=1, le=1000)
    thumbnail_px: int = Field(default=0, ge=0, le=512, description="Frame-message JPEG thumbnail side.")


class MetricsConfig(Section):
    listen: Annotated[str, AfterValidator(check_listen)] | None = Field(
        default=None, description="host:port of the Prometheus endpoint; off when unset."
    )


class Config(Section):
    device_id: str = Field(default_factory=socket.gethostname)
    source: SourceConfig = Field(default_factory=SourceConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    geotag: GeotagConfig = Field(default_factory=GeotagConfig)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tak: TakConfig = Field(default_factory=TakConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log: LogConfig = Field(default_factory=LogConfig)

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, v: str) -> str:
        if not v or "/" in v or "+" in v or "#" in v:
            raise ValueError("must be non-empty and contain no '/', '+' or '#' (used in topics and paths)")
        return v

    @property
    def db_path(self) -> Path:
        return self.storage.dir / "skysift.db"

    @property
    def watch_folder(self) -> Path | None:
        """The watched folder; ``./inbox`` when neither a folder nor a camera is configured."""
        if self.source.camera is not None:
            return None
        return self.source.folder if self.source.folder is not None else Path("inbox")


def parse_config(data: Any, origin: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate a mapping (already parsed from YAML) into a :class:`Config`.

    Relative paths are resolved against ``base_dir`` (the YAML file's folder) so that a
    config file means the same thing whatever the working directory of the service.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, origin)) from None
    if base_dir is not None:
        resolve_relative_paths(cfg, base_dir)
    return cfg


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Load and validate the YAML file at ``path``; ``None`` gives the embedded defaults.

    Values only: :func:`check_paths` then looks at the disk, once command-line overrides
    (``skysift run --folder``) are applied.
    """
    if path is None:
        return parse_config({})
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the configuration file: {exc.strerror or exc}") from None
    return parse_config(load_yaml(text, str(p)), origin=str(p), base_dir=p.resolve().parent)


def check_paths(cfg: Config, config_file: str | os.PathLike[str] | None) -> None:
    """Refuse (:class:`ConfigError`, naming each dotted key) what ``skysift run`` would trip
    over on disk: missing inputs, a ``storage.dir`` that is a file. ``config_file``: the YAML
    ``cfg`` came from. ``config check`` and ``run`` call this before anything is created, so a
    service never starts half-way; :func:`parse_config` does not (tests make files later).
    """
    config_dir = Path(config_file).resolve().parent if config_file is not None else None
    problems = path_problems(cfg, config_dir)
    if problems:
        raise ConfigError(report(str(config_file or "<defaults>"), problems))


def example_config() -> str:
    """The fully commented example configuration (shipped as agent/core/skysift.example.yaml)."""
    return (Path(__file__).with_name("skysift.example.yaml")).read_text(encoding="utf-8")
