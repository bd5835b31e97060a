"""BigQuery targets: frame rows and flight rows, exactly once through deterministic load jobs.

Mechanism (see :mod:`agent.store.batches`): pending rows are cut into a batch that is committed to
SQLite (keys and exact payload) before the first attempt; the batch is sent as one load job
whose id is ``skysift_<device>_<target>_<batch uuid>_<attempt>``. Load jobs are atomic (all
rows or none). If the process dies after BigQuery accepted the job but before SQLite recorded
it, the restart sends the same job id again and gets 409 Already Exists; the existing job's
state then decides: DONE without error -> the rows are there, mark done; DONE with an error ->
nothing was written, bump the attempt (new job id) and retry; still running -> wait. So no
crash point can write a row twice, and none can lose one.

Streaming inserts (``insertAll``) were not used: their ``insertId`` de-duplication is best
effort for about a minute, and no guarantee after an outage or a restart.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.core.config import Config
from agent.store import batches
from agent.store.db import Store, utcnow
from sync import quota
from sync.base import SyncError, SyncSetupError, SyncTarget, TargetUnavailable
from sync.clients import bigquery_client
from sync.clients import wrap_error as _wrap
from sync.paths import gcs_uri
from sync.pending import BIGQUERY_FLIGHTS, BIGQUERY_FRAMES, FLIGHT_KEY, PENDING_FLIGHTS
from sync.schema import FLIGHT_FIELDS, FLIGHTS_TABLE, FRAME_FIELDS, bq_schema, flight_row, frame_row

log = logging.getLogger(__name__)


def table_ids(cfg: Config) -> dict[str, str]:
    bq = cfg.sync.bigquery
    base = f"{bq.project}.{bq.dataset}"
    return {
        "frames": f"{base}.{bq.table}",
        "flights": f"{base}.{FLIGHTS_TABLE}",
        "frames_dedup": f"{base}.{bq.table}_dedup",
        "flights_latest": f"{base}.{FLIGHTS_TABLE}_latest",
    }



class _LoadJobTarget(SyncTarget):
    """Shared batch/job logic; subclasses choose the rows and the table."""

    fields: list[tuple[str, str, str, str]]
    table_key: str

    def __init__(self, cfg: Config, client: Any | None = None, timeout_s: float = 60.0):
        self.cfg = cfg
        self.client = client or bigquery_client(cfg)
        self.table_id = table_ids(cfg)[self.table_key]
        self.timeout_s = timeout_s

    def _next(self, store: Store, limit: int) -> tuple[list[str], list[dict[str, Any]]]:
        raise NotImplementedError

    def push(self, store: Store, limit: int) -> int:
        done = 0
        for b in batches.open_batches(store, self.name):
            done += self._send(store, b)
        paced = self.cfg.sync.bigquery.min_interval_s > 0
        while done < limit and self.wait_s(store) == 0:
            size = self.cfg.sync.bigquery.max_rows if paced else self.cfg.sync.batch_rows
            keys, rows = self._next(store, min(limit - done, size))
            if not keys:
                break
            done += self._send(store, batches.create(store, self.name, keys, rows))
        return done

    def wait_s(self, store: Store) -> float:
        """Seconds until ``sync.bigquery.min_interval_s`` allows the next new load job.

        Paced from the newest batch in SQLite, so a restart does not reset the pace. A batch
        still open is never held back: its rows are already cut and owed."""
        interval = self.cfg.sync.bigquery.min_interval_s
        if interval <= 0 or batches.open_batches(store, self.name):
            return 0.0
        last = batches.last_created(store, self.name)
        if last is None:
            return 0.0
        elapsed = time.time() - datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp()
        # a clock set backwards (no RTC until GPS or NTP) must not hold rows for longer than one
        # interval: clamp to [0, interval]
        return min(interval, max(0.0, interval - elapsed))

    def _job_config(self) -> Any:
        from google.cloud import bigquery

        return bigquery.LoadJobConfig(
            schema=bq_schema(self.fields),
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
        )

    def _submit(self, batch: batches.Batch, job_id: str) -> tuple[Any, str]:
        """Insert the load job, or find the one an earlier attempt inserted; wait until DONE."""
        from google.api_core import exceptions as gexc

        try:
            job = self.client.load_table_from_json(
                batch.rows,
                self.table_id,
                job_id=job_id,
                job_config=self._job_config(),
                num_retries=0,  # our backoff retries; the library's would block the loop
                timeout=self.timeout_s,
            )
            how = "loaded"
        except gexc.Conflict:
            # An earlier attempt reached BigQuery (crash or lost response): ask what it did.
            job = self.client.get_job(job_id, retry=None, timeout=self.timeout_s)
            how = "found existing job"
        deadline = time.monotonic() + self.timeout_s
        while job.state != "DONE":
            if time.monotonic() > deadline:
                raise TargetUnavailable(f"load job {job_id} still {job.state}")
            time.sleep(0.5)
            job.reload(retry=None, timeout=self.timeout_s)
        return job, how

    def _send(self, store: Store, batch: batches.Batch) -> int:
        job_id = batch.job_id(self.cfg.device_id)
        try:
            job, how = self._submit(batch, job_id)
        except SyncError:
            raise
        except Exception as exc:
            reason = quota.reason_of(exc)
            if reason is not None:
                # The request itself was refused, so it created nothing: an insert refused for
                # quota leaves no job behind and its id free, and the retry after the pause
                # sends the SAME job id (the attempt is not bumped). A refused get/reload is
                # about a job that exists, whose id the retry must keep too.
                msg = f"{self.name}: load job {job_id} refused ({reason}); rows kept"
                raise quota.QuotaPaused(msg, reason, job_created=False) from exc
            raise _wrap(exc, f"{self.name}: load job {job_id}") from exc
        if job.error_result:
            # The job ran and failed: it wrote nothing, but its id is spent (job ids are unique
            # and a finished job cannot be re-run), so the retry needs a NEW attempt id.
            err = f"load job {job_id} failed: {job.error_result}"
            batches.retry_with_new_attempt(store, batch, err)
            reason = quota.reason_of_result(job.error_result)
            if reason is not None:
                raise quota.QuotaPaused(f"{self.name}: {err}; rows kept", reason, job_created=True)
            raise SyncError(f"{self.name}: {err}")
        batches.complete(store, batch, {"job_id": job_id, "rows": job.output_rows, "how": how})
        log.debug("%s: %s %s, %d rows", self.name, how, job_id, len(batch.keys))
        return len(batch.keys)


class FrameRows(_LoadJobTarget):
    """One BigQuery row per local frame, in commit order."""

    owed = BIGQUERY_FRAMES
    fields = FRAME_FIELDS
    table_key = "frames"

    def __init__(self, cfg: Config, client: Any | None = None, timeout_s: float = 60.0):
        super().__init__(cfg, client, timeout_s)
        self._runs: dict[str, dict | None] = {}

    def _run(self, store: Store, run_id: str | None) -> dict | None:
        if run_id is None:
            return None
        if run_id not in self._runs:
            r = store.db.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]).fetchone()
            self._runs[run_id] = dict(r) if r else None
        return self._runs[run_id]

    def _next(self, store: Store, limit: int) -> tuple[list[str], list[dict[str, Any]]]:
        frames = store.pending(
            self.name, limit=limit, where=f"f.frame_id NOT IN {batches.OPEN_KEYS_SQL}", args=[self.name]
        )
        now = utcnow()
        rows = [
            frame_row(f, self.cfg.device_id, self._run(store, f.get("run_id")), gcs_uri(self.cfg, f), now)
            for f in frames
        ]
        return [f["frame_id"] for f in frames], rows


class FlightRows(_LoadJobTarget):
    """One row per ended flight. The delivery key is ``<flight_id>@<ended_at>#<frames>``, so a
    flight that changes after it was synced (reopened, late frames) is synced again as a new
    version; the ``flights_latest`` view keeps the last one."""

    owed = BIGQUERY_FLIGHTS
    fields = FLIGHT_FIELDS
    table_key = "flights"

    def _next(self, store: Store, limit: int) -> tuple[list[str], list[dict[str, Any]]]:
        q = (
            f"SELECT f.* {PENDING_FLIGHTS} AND {FLIGHT_KEY} NOT IN {batches.OPEN_KEYS_SQL} "
            "ORDER BY f.ended_at, f.flight_id LIMIT ?"
        )
        now = utcnow()
        keys, rows = [], []
        for r in store.db.execute(q, [self.name, self.name, limit]):
            f = dict(r)
            keys.append(f"{f['flight_id']}@{f['ended_at']}#{f['frames']}")
            rows.append(flight_row(f, self.cfg.device_id, now))
        return keys, rows


def init_dataset(cfg: Config, client: Any | None = None) -> list[str]:
    """Create the dataset, both tables and the de-duplicated views; return what was done.

    Idempotent: existing objects are kept, and an existing table only gains the fields it
    lacks (:func:`add_missing_fields`); a second run changes nothing.
    """
    from google.cloud import bigquery

    if not cfg.sync.bigquery.project:
        raise SyncSetupError("sync.bigquery.project is not set")
    client = client or bigquery_client(cfg)
    ids = table_ids(cfg)
    done: list[str] = []
    ds = bigquery.Dataset(f"{cfg.sync.bigquery.project}.{cfg.sync.bigquery.dataset}")
    if cfg.sync.bigquery.location:
        ds.location = cfg.sync.bigquery.location
    client.create_dataset(ds, exists_ok=True)
    done.append(f"dataset {ds.dataset_id}")
    for key, fields, part, cluster in (
        ("frames", FRAME_FIELDS, "capture_date", ["flight_id", "frame_id"]),
        ("flights", FLIGHT_FIELDS, "start_date", ["flight_id"]),
    ):
        t = bigquery.Table(ids[key], schema=bq_schema(fields))
        t.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field=part
        )
        t.clustering_fields = cluster
        t.description = "skysift results (see sync/schema.py)"
        client.create_table(t, exists_ok=True)
        done.append(f"table {ids[key]} (partitioned by {part}, clustered by {', '.join(cluster)})")
        added = add_missing_fields(client, ids[key], fields)
        if added:
            done.append(f"table {ids[key]}: added {', '.join(added)}")
    sql = Path(__file__).with_name("views.sql").read_text(encoding="utf-8")
    quoted = {k: f"`{v}`" for k, v in ids.items()}
    for stmt in _statements(sql):
        client.query(stmt.format(**quoted)).result()
    done.append(f"views {ids['frames_dedup']}, {ids['flights_latest']}")
    return done


def add_missing_fields(client: Any, table_id: str, fields: list[tuple[str, str, str, str]]) -> list[str]:
    """Add to an existing table the top-level fields of ``fields`` it lacks; their names.

    BigQuery only lets a schema grow by NULLABLE or REPEATED fields appended at the end, which
    is all a newer skysift adds; existing fields are never changed (a type change needs a new
    table). Nothing to add: no update_table call at all.
    """
    table = client.get_table(table_id)
    have = {f.name for f in table.schema}
    missing = [f for f in fields if f[0] not in have]
    if not missing:
        return []
    table.schema = list(table.schema) + bq_schema([(n, t, m if m != "REQUIRED" else "NULLABLE", d)
                                                   for n, t, m, d in missing])
    client.update_table(table, ["schema"])
    return [f[0] for f in missing]


def _statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
