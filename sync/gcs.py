"""GCS target: frame images, exactly once through conditional uploads and checksums.

Each image is uploaded with ``if_generation_match=0`` ("create only"). GCS uploads are atomic,
so after a crash an object either does not exist (upload again) or is complete. A 412 means an
earlier attempt got through: the object's MD5 and CRC32C are compared with the local file, and
the delivery is marked done only when they match (a mismatch, which would be a corrupt or
foreign object, is replaced with a generation-matched upload of the local file). After every
upload the checksums GCS reports are compared with the local ones too.

Images whose file has vanished or changed since classification are marked ``dropped`` with
the reason: there is nothing left to upload.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agent.core.config import Config
from agent.store.db import Store
from sync.base import SyncError, SyncSetupError, SyncTarget, TargetUnavailable
from sync.clients import is_transient, storage_client
from sync.paths import CONTENT_TYPES, extension, object_name
from sync.pending import DAMAGED_IMAGES, IMAGES, REST_IMAGES

log = logging.getLogger(__name__)

TARGET = IMAGES


class Vanished(SyncError):
    """The image file is gone or no longer holds the classified content."""


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def checksums(data: bytes) -> tuple[str, str]:
    """(md5, crc32c) as GCS reports them: base64 of the big-endian digests."""
    import google_crc32c

    return _b64(hashlib.md5(data).digest()), _b64(google_crc32c.Checksum(data).digest())


class GcsImages(SyncTarget):
    """Uploads the images of one pass: ``damaged`` first, then ``rest`` (when uploading all)."""

    def __init__(
        self,
        cfg: Config,
        which: str,
        client: Any | None = None,
        timeout_s: float = 60.0,
        workers: int = 4,
    ):
        if which not in ("damaged", "rest"):
            raise ValueError(which)
        if not cfg.sync.gcs.bucket:
            raise SyncSetupError("sync.gcs.bucket is not set")
        self.cfg = cfg
        self.which = which
        self.owed = DAMAGED_IMAGES if which == "damaged" else REST_IMAGES
        self.client = client or storage_client(cfg)
        self.bucket = self.client.bucket(cfg.sync.gcs.bucket)
        self.timeout_s = timeout_s
        # A few uploads in flight hide the round-trip time of a slow, high-latency link.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="skysift-gcs")
        self.workers = workers

    def push(self, store: Store, limit: int) -> int:
        frames = store.pending(TARGET, limit=max(1, limit), where=self.owed.where)
        futures = [(f, self._pool.submit(self._upload_one, f)) for f in frames]
        done = 0
        first_error: Exception | None = None
        for frame, fut in futures:
            try:
                detail = fut.result()
            except Vanished as exc:
                store.mark_dropped(TARGET, [frame["frame_id"]], str(exc))
                log.warning("gcs: dropped frame %s: %s", frame["frame_id"], exc)
                done += 1  # resolved: it leaves the pending set
                continue
            except Exception as exc:
                store.mark_failed(TARGET, [frame["frame_id"]], str(exc))
                first_error = first_error or exc
                continue
            store.mark_delivered(TARGET, [frame["frame_id"]], detail)
            done += 1
        if first_error is not None:
            if isinstance(first_error, SyncError):
                raise first_error
            raise _wrap(first_error) from first_error
        return done

    def _read(self, frame: dict[str, Any]) -> bytes:
        path = Path(frame.get("image_path") or "")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise Vanished(f"image file vanished: {path}") from None
        except IsADirectoryError:
            raise Vanished(f"image path is a directory: {path}") from None
        if frame.get("sha256") and hashlib.sha256(data).hexdigest() != frame["sha256"]:
            raise Vanished(f"image file changed since it was classified: {path}")
        return data

    def _upload_one(self, frame: dict[str, Any]) -> dict[str, Any]:
        from google.api_core import exceptions as gexc

        data = self._read(frame)
        md5, crc = checksums(data)
        name = object_name(self.cfg, frame)
        blob = self._blob(name, frame)
        try:
            # retry=None: our backoff retries; the library's would block the loop for minutes.
            blob.upload_from_string(
                data,
                content_type=CONTENT_TYPES[extension(frame)],
                if_generation_match=0,
                checksum="crc32c",
                retry=None,
                timeout=self.timeout_s,
            )
            how = "uploaded"
        except gexc.PreconditionFailed:
            existing = self.bucket.get_blob(name, retry=None, timeout=self.timeout_s)
            if existing is None:  # deleted between the two calls: try again next round
                raise TargetUnavailable(f"gcs: {name} answered 412 then vanished") from None
            if (existing.md5_hash, existing.crc32c) == (md5, crc):
                return {"generation": existing.generation, "how": "already there, checksums match"}
            log.warning("gcs: %s exists with other content; replacing it with the local file", name)
            blob = self._blob(name, frame)
            blob.upload_from_string(
                data,
                content_type=CONTENT_TYPES[extension(frame)],
                if_generation_match=existing.generation,
                checksum="crc32c",
                retry=None,
                timeout=self.timeout_s,
            )
            how = "replaced"
        if (blob.md5_hash, blob.crc32c) != (md5, crc):
            raise SyncError(
                f"gcs: checksum mismatch for {name}: local md5={md5} crc32c={crc}, "
                f"remote md5={blob.md5_hash} crc32c={blob.crc32c}"
            )
        return {"generation": blob.generation, "how": how}

    def _blob(self, name: str, frame: dict[str, Any]) -> Any:
        blob = self.bucket.blob(name)
        meta = {
            "frame_id": frame["frame_id"],
            "flight_id": frame["flight_id"],
            "device_id": self.cfg.device_id,
            "label": frame.get("label"),
            "p_damaged": frame.get("p_damaged"),
            "lat": frame.get("lat"),
            "lon": frame.get("lon"),
            "captured_at": frame.get("captured_at"),
            "sha256": frame.get("sha256"),
        }
        blob.metadata = {k: str(v) for k, v in meta.items() if v is not None}
        return blob

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _wrap(exc: Exception) -> SyncError:
    from google.api_core import exceptions as gexc
    from google.resumable_media import DataCorruption

    if isinstance(exc, DataCorruption):
        return TargetUnavailable(f"gcs: upload corrupted in transit: {exc}")
    if is_transient(exc):
        return TargetUnavailable(f"gcs: {exc}")
    if isinstance(exc, (gexc.NotFound, gexc.Forbidden, gexc.Unauthorized)):
        return SyncSetupError(f"gcs: {exc} (check the bucket exists: `skysift sync init`; check the credentials)")
    return SyncError(f"gcs: {exc}")


def init_bucket(cfg: Config, client: Any | None = None) -> str:
    """Create the bucket when it does not exist (idempotent); return what was done."""
    from google.api_core import exceptions as gexc

    if not cfg.sync.gcs.bucket:
        raise SyncSetupError("sync.gcs.bucket is not set")
    client = client or storage_client(cfg)
    try:
        client.get_bucket(cfg.sync.gcs.bucket)
        return f"bucket gs://{cfg.sync.gcs.bucket} exists"
    except gexc.NotFound:
        client.create_bucket(cfg.sync.gcs.bucket, location=cfg.sync.bigquery.location)
        return f"bucket gs://{cfg.sync.gcs.bucket} created"
