"""BigQuery targets through the Storage Write API: committed streams, explicit offsets.

Chosen by ``sync.bigquery.method: write_api``. Same outbox as the load-job targets
(:mod:`sync.bigquery`: the same rows, the same frozen batches of :mod:`agent.store.batches`),
another way to land them, with no load job and so no load-job quota (README, "BigQuery quotas").
Both tables, frames and flights, go this way.

Mechanism: a target appends to one COMMITTED write stream (rows visible once appended). Each
batch is *placed* before its first append: its stream and offset are written into the batch's
``detail`` in SQLite, at the offset where the previous batch on that stream ended. Every attempt
then sends the same rows at the same offset, and the stream refuses an offset it already holds
(``ALREADY_EXISTS``): an append is atomic, so that answer means the batch landed (a crash after
the append, before SQLite marked it) and the batch is marked done. ``OUT_OF_RANGE`` (the offset
lies past the stream's end) means nothing was written: the batch is placed on a new stream. A
stream that no longer exists (expired; an emulator restarted: it keeps streams in memory only)
cannot say whether an earlier attempt landed, so the table itself is asked whether the batch's
rows are there (device, synced_at and key of every row) before anything is sent again.

A batch is placed only while it is the target's one open batch (a new one is cut only after the
last is done), so offsets on a stream never leave a gap. Switch ``method`` with an empty outbox
(``skysift sync --once`` first): an open batch of one method is not known to the other.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from agent.core.config import Config
from agent.store import batches
from agent.store.db import Store, utcnow
from sync import proto
from sync.base import SyncError, SyncSetupError, TargetUnavailable
from sync.bigquery import FlightRows, FrameRows
from sync.clients import wrap_error as _wrap

log = logging.getLogger(__name__)

#: google.rpc.Code values an append answers with
_ALREADY_EXISTS, _OUT_OF_RANGE = 6, 11
_TRANSIENT_CODES = frozenset({4, 8, 10, 13, 14})  # deadline, exhausted, aborted, internal, unavailable


class StreamGone(SyncError):
    """The batch's write stream no longer exists remotely."""


def write_client(cfg: Config, grpc_address: str | None = None) -> Any:
    """A BigQueryWriteClient: Google Cloud with the sync credentials, or, for an emulator, an
    insecure channel to ``grpc_address`` (``127.0.0.1:<port>``: the Write API is gRPC, the
    emulator serves it on a port of its own, not ``sync.bigquery.endpoint``)."""
    from google.cloud.bigquery_storage_v1 import BigQueryWriteClient

    if grpc_address is not None:
        import grpc
        from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
            BigQueryWriteGrpcTransport,
        )

        channel = grpc.insecure_channel(grpc_address)
        return BigQueryWriteClient(transport=BigQueryWriteGrpcTransport(channel=channel))
    if cfg.sync.bigquery.endpoint:
        raise SyncSetupError(
            "sync.bigquery.method write_api with an emulator endpoint needs the emulator's gRPC "
            "address, which the configuration has no key for: use method load_jobs"
        )
    from sync.clients import _credentials  # the same credentials as every other client

    creds, _ = _credentials(cfg, None)
    return BigQueryWriteClient(credentials=creds)


def _status_error(code: int, message: str, what: str) -> SyncError:
    if code in _TRANSIENT_CODES:
        return TargetUnavailable(f"{what}: {message} (code {code})")
    return SyncError(f"{what}: {message} (code {code})")


class _Appends:
    """Write API mixin over a load-job target class: its row selection, another ``_send``."""

    cfg: Config
    name: str
    client: Any
    table_id: str
    fields: list[tuple[str, str, str, str]]
    timeout_s: float
    #: the row column that, with device_id and synced_at, finds a batch's rows in the table
    key_column: str
    message_name: str

    def __init__(self, cfg: Config, client: Any | None = None, write: Any | None = None,
                 timeout_s: float = 60.0):
        super().__init__(cfg, client, timeout_s)  # type: ignore[call-arg]
        self.write = write or write_client(cfg)
        self._cls = proto.message_class(self.message_name, self.fields)
        self._descriptor = proto.descriptor(self.message_name, self.fields)

    def wait_s(self, store: Store) -> float:
        """Never paced: ``min_interval_s`` spaces load jobs, which this target does not make."""
        return 0.0

    def _send(self, store: Store, batch: batches.Batch) -> int:
        stream, offset = _placement(store, batch) or self._place(store, batch, None)
        how, stream, offset = self._deliver(store, batch, stream, offset)
        batches.complete(store, batch, {"stream": stream, "offset": offset,
                                        "rows": len(batch.keys), "how": how})
        log.debug("%s: %s %d rows at %s@%d", self.name, how, len(batch.keys), stream, offset)
        return len(batch.keys)

    def _deliver(self, store: Store, batch: batches.Batch, stream: str, offset: int
                 ) -> tuple[str, str, int]:
        """Append at the placement, or find the rows landed; (how, stream, offset) it ended."""
        try:
            return self._append(stream, offset, batch), stream, offset
        except _OffsetPastEnd:
            log.warning("%s: offset %d is past the end of %s: nothing was written there, batch "
                        "%s moves to a new stream", self.name, offset, stream, batch.batch_id)
        except StreamGone as gone:
            # it cannot say whether an earlier attempt landed: the table can
            found = self._rows_in_table(batch)
            if found == len(batch.rows):
                return "found in table", stream, offset
            if found:  # appends are atomic: part of a batch there means something else wrote it
                raise SyncError(f"{self.name}: batch {batch.batch_id}: {found} of "
                                f"{len(batch.rows)} rows already in {self.table_id}; not sent again") from gone
            log.info("%s: stream %s is gone; batch %s moves to a new stream", self.name, stream,
                     batch.batch_id)
        stream, offset = self._place(store, batch, stream)
        return self._append(stream, offset, batch), stream, offset

    def _place(self, store: Store, batch: batches.Batch, lost: str | None) -> tuple[str, int]:
        """Give ``batch`` its stream and offset, durably, before anything is appended: the
        stream the last placed batch used, at the offset it ended, or a new stream."""
        last = None if lost else _last_placed(store, self.name)
        if last is None:
            stream, offset = self._create_stream(), 0
        else:
            stream, offset = last
        with store.transaction() as db:
            db.execute(
                "UPDATE sync_batches SET detail = ?, updated_at = ? WHERE batch_id = ?",
                [json.dumps({"stream": stream, "offset": offset}), utcnow(), batch.batch_id],
            )
        return stream, offset

    def _create_stream(self) -> str:
        from google.cloud.bigquery_storage_v1 import types

        project, dataset, table = self.table_id.split(".")
        parent = self.write.table_path(project, dataset, table)
        committed = types.WriteStream(type_=types.WriteStream.Type.COMMITTED)
        try:
            # A crash before the stream's name reaches SQLite leaves an empty stream: harmless.
            return self.write.create_write_stream(
                parent=parent, write_stream=committed, timeout=self.timeout_s
            ).name
        except Exception as exc:
            raise _wrap(exc, f"{self.name}: create write stream on {self.table_id}") from exc

    def _request(self, stream: str, offset: int, batch: batches.Batch) -> Any:
        from google.cloud.bigquery_storage_v1 import types

        rows = types.ProtoRows(serialized_rows=proto.serialise(self._cls, batch.rows, self.fields))
        data = types.AppendRowsRequest.ProtoData(
            writer_schema=types.ProtoSchema(proto_descriptor=self._descriptor), rows=rows
        )
        req = types.AppendRowsRequest(write_stream=stream, proto_rows=data)
        req.offset = offset
        return req

    def _append(self, stream: str, offset: int, batch: batches.Batch) -> str:
        """Append the batch at its offset: ``appended`` or ``already written``."""
        from google.api_core import exceptions as gexc

        what = f"{self.name}: append batch {batch.batch_id} at {stream}@{offset}"
        try:
            responses = self.write.append_rows(
                iter([self._request(stream, offset, batch)]),
                timeout=self.timeout_s,
                # the routing header the Write API needs on its bidi stream
                metadata=(("x-goog-request-params", f"write_stream={stream}"),),
            )
            resp = next(iter(responses))
        except (gexc.NotFound, gexc.InvalidArgument) as exc:
            if self._stream_exists(stream):
                raise SyncError(f"{what}: {exc}") from exc
            raise StreamGone(f"{what}: the stream is gone") from exc
        except gexc.AlreadyExists:
            return "already written"
        except gexc.OutOfRange as exc:
            raise _OffsetPastEnd(what) from exc
        except StopIteration as exc:
            raise TargetUnavailable(f"{what}: no answer") from exc
        except Exception as exc:
            raise _wrap(exc, what) from exc
        if "error" in resp and resp.error.code:
            if resp.error.code == _ALREADY_EXISTS:
                return "already written"  # an append is atomic: all of this batch is there
            if resp.error.code == _OUT_OF_RANGE:
                raise _OffsetPastEnd(what)
            detail = "; ".join(f"row {e.index}: {e.message}" for e in resp.row_errors)
            raise _status_error(resp.error.code, f"{resp.error.message} {detail}".strip(), what)
        return "appended"

    def _stream_exists(self, stream: str) -> bool:
        from google.api_core import exceptions as gexc

        try:
            self.write.get_write_stream(name=stream, timeout=self.timeout_s)
        except (gexc.NotFound, gexc.InvalidArgument):
            return False
        except Exception as exc:
            raise _wrap(exc, f"{self.name}: get write stream {stream}") from exc
        return True

    def _rows_in_table(self, batch: batches.Batch) -> int:
        from google.cloud import bigquery

        # every row of a batch has the batch's synced_at (set when it was cut)
        params = [
            bigquery.ScalarQueryParameter("device", "STRING", self.cfg.device_id),
            bigquery.ScalarQueryParameter("synced_at", "TIMESTAMP", batch.rows[0]["synced_at"]),
            bigquery.ArrayQueryParameter("keys", "STRING", [r[self.key_column] for r in batch.rows]),
        ]
        sql = (f"SELECT COUNT(*) FROM `{self.table_id}` WHERE device_id = @device AND "
               f"synced_at = @synced_at AND {self.key_column} IN UNNEST(@keys)")
        try:
            job = self.client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params))
            return next(iter(job.result(timeout=self.timeout_s)))[0]
        except Exception as exc:
            raise _wrap(exc, f"{self.name}: look for batch {batch.batch_id} in {self.table_id}") from exc

    def close(self) -> None:
        transport = getattr(self.write, "transport", None)
        if transport is not None:
            transport.close()


class _OffsetPastEnd(SyncError):
    """OUT_OF_RANGE: the offset is past the stream's end, so nothing was written at it."""



def _placement(store: Store, batch: batches.Batch) -> tuple[str, int] | None:
    """The stream and offset recorded for ``batch``, or None before its first attempt."""
    r = store.db.execute("SELECT detail FROM sync_batches WHERE batch_id = ?", [batch.batch_id]).fetchone()
    d = json.loads(r[0]) if r and r[0] else {}
    return (d["stream"], d["offset"]) if "stream" in d else None


def _last_placed(store: Store, target: str) -> tuple[str, int] | None:
    """(stream, the offset where it ends) of the newest batch placed on a stream.

    Batches are placed and completed one at a time, so the most recently updated batch with a
    stream is the last one placed; load-job batches (no stream in their detail) are skipped."""
    r = store.db.execute(
        "SELECT json_extract(detail, '$.stream'), json_extract(detail, '$.offset') + "
        "json_array_length(keys) FROM sync_batches WHERE target = ? AND "
        "json_extract(detail, '$.stream') IS NOT NULL ORDER BY updated_at DESC, rowid DESC LIMIT 1",
        [target],
    ).fetchone()
    return (r[0], r[1]) if r else None


class FrameAppends(_Appends, FrameRows):
    """Frame rows (the rows of :class:`sync.bigquery.FrameRows`) by the Write API."""

    key_column = "frame_id"
    message_name = "FrameRow"


class FlightAppends(_Appends, FlightRows):
    """Flight rows (the rows of :class:`sync.bigquery.FlightRows`) by the Write API."""

    key_column = "flight_id"
    message_name = "FlightRow"
