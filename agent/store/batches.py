"""Batches of the outbox: the keys and payload of one remote write, fixed before the first try.

Why: BigQuery only de-duplicates best effort, so exactly-once comes from making every retry the
*same* write. A batch (ordered keys + the exact rows) is committed to SQLite before anything is
sent; its remote job id is derived from the batch's random id and its attempt number. After a
crash the open batch is sent again with the same job id: BigQuery answers 409 Already Exists
when the first try got through, and the job's state then says whether the rows landed.
The attempt number is bumped only when the remote *reported* the job failed (a failed load job
writes nothing), never because of a timeout or a crash.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from agent.store.db import Store, utcnow


@dataclass
class Batch:
    batch_id: str
    target: str
    keys: list[str]
    rows: list[dict[str, Any]]
    attempt: int

    def job_id(self, device_id: str) -> str:
        """Deterministic job id: same batch and attempt -> same id (BigQuery: [A-Za-z0-9_-])."""
        dev = re.sub(r"[^A-Za-z0-9_-]", "_", device_id)[:200]
        return f"skysift_{dev}_{self.target}_{self.batch_id}_{self.attempt}"


def _from_row(r: Any) -> Batch:
    return Batch(
        batch_id=r["batch_id"],
        target=r["target"],
        keys=json.loads(r["keys"]),
        rows=json.loads(r["payload"] or "[]"),
        attempt=r["attempt"],
    )


def open_batches(store: Store, target: str) -> list[Batch]:
    """Batches created but not confirmed, oldest first: they go before any new batch."""
    q = "SELECT * FROM sync_batches WHERE target = ? AND state = 'open' ORDER BY created_at, rowid"
    return [_from_row(r) for r in store.db.execute(q, [target])]


def last_created(store: Store, target: str) -> str | None:
    """When the newest batch of ``target`` (open or done) was created: the last job's start."""
    q = "SELECT MAX(created_at) FROM sync_batches WHERE target = ?"
    return store.db.execute(q, [target]).fetchone()[0]


def create(store: Store, target: str, keys: list[str], rows: list[dict[str, Any]]) -> Batch:
    """Record a new batch durably (committed before the caller sends anything)."""
    if not keys:
        raise ValueError("empty batch")
    b = Batch(uuid.uuid4().hex, target, list(keys), rows, 0)
    now = utcnow()
    with store.transaction() as db:
        db.execute(
            "INSERT INTO sync_batches (batch_id, target, keys, payload, attempt, state, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, 0, 'open', ?, ?)",
            [b.batch_id, target, json.dumps(b.keys), json.dumps(rows, separators=(",", ":")), now, now],
        )
    return b


def complete(store: Store, batch: Batch, detail: dict[str, Any], mark: bool = True) -> None:
    """The remote confirmed the batch: close it and mark its keys delivered, atomically."""
    now = utcnow()
    d = json.dumps(detail)
    with store.transaction() as db:
        db.execute(
            "UPDATE sync_batches SET state = 'done', payload = NULL, updated_at = ?, detail = ? "
            "WHERE batch_id = ?",
            [now, d, batch.batch_id],
        )
        if mark:
            db.conn.executemany(
                "INSERT INTO deliveries (target, frame_id, state, attempts, updated_at, detail) "
                "VALUES (?, ?, 'done', ?, ?, ?) ON CONFLICT(target, frame_id) DO UPDATE SET "
                "state = 'done', attempts = attempts + excluded.attempts, last_error = NULL, "
                "updated_at = excluded.updated_at, detail = excluded.detail",
                [(batch.target, k, batch.attempt + 1, now, d) for k in batch.keys],
            )


def retry_with_new_attempt(store: Store, batch: Batch, error: str) -> None:
    """The remote said the job failed (and so wrote nothing): the next try uses a new job id."""
    batch.attempt += 1
    with store.transaction() as db:
        db.execute(
            "UPDATE sync_batches SET attempt = ?, updated_at = ?, detail = ? WHERE batch_id = ?",
            [batch.attempt, utcnow(), json.dumps({"last_error": error[:2000]}), batch.batch_id],
        )


#: SQL subquery (one ``?``: the target) of the keys held by open batches: a key is in at most
#: one open batch, so a new batch never re-sends rows an unfinished one may already have sent.
OPEN_KEYS_SQL = (
    "(SELECT j.value FROM sync_batches sb, json_each(sb.keys) j "
    "WHERE sb.target = ? AND sb.state = 'open')"
)
