"""The SQLite buffer on the device: the source of truth for frames, flights, runs and deliveries.

One file, ``<storage.dir>/skysift.db``, in WAL mode so that the sync loop, the MQTT publisher
and ``skysift status`` read while ingest writes. The schema is created and upgraded by the
numbered migrations of :mod:`agent.store.migrations` when a writable store opens it.

Delivery state is kept per frame and per target (``gcs``, ``bigquery``, ``mqtt``) in the
``deliveries`` table. A frame with no ``done`` delivery for a target is *pending* for it, so a
target added later sees every old frame as pending, and nothing needs enqueueing in the ingest
transaction: committing the frame row is all it takes for every downstream consumer to see it.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from agent.core.backoff import Backoff
from agent.core.errors import StorageFull
from agent.store.columns import JSON_COLUMNS
from agent.store.migrations import atomic, migrate

log = logging.getLogger(__name__)

T = TypeVar("T")

FRAME_STATUSES = ("classified", "rejected")
GEO_SOURCES = ("exif", "track", "telemetry", "none")


def utcnow() -> str:
    """Current UTC time, ISO 8601 with milliseconds and a Z: sorts as text, parses everywhere."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """A connection to the skysift database. Open one per thread (sqlite3 objects are not
    shared across threads); WAL mode lets them all work at once."""

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=30)
        conn.row_factory = sqlite3.Row
        self.db = sqlite_utils.Database(conn)
        self._lock = threading.RLock()
        if not readonly:
            try:
                # WAL: readers never block the writer. synchronous=NORMAL in WAL survives a crash
                # or kill -9 of the process (the guarantee the agent promises); on power loss the
                # last commits may roll back, and those frames are simply classified again.
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.execute("PRAGMA foreign_keys=ON")
                migrate(self.db)
            except BaseException:
                conn.close()  # a full disk at open: the caller retries with a new connection
                raise

    def close(self) -> None:
        self.db.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """One atomic write: everything inside commits together or not at all."""
        with self._lock, atomic(self.db.conn):
            yield self.db

    # --- runs ----------------------------------------------------------------------------------
    def start_run(self, run: dict[str, Any]) -> str:
        row = dict(run)
        row.setdefault("started_at", utcnow())
        if isinstance(row.get("versions"), dict):
            row["versions"] = json.dumps(row["versions"], sort_keys=True)
        with self.transaction() as db:
            db["runs"].insert(row, pk="run_id", replace=True)
        return row["run_id"]

    def end_run(self, run_id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET ended_at = ? WHERE run_id = ?", [utcnow(), run_id])

    # --- flights -------------------------------------------------------------------------------
    def ensure_flight(self, flight_id: str, name: str | None = None, source: str | None = None) -> bool:
        """Create the flight if it does not exist; return True when it was created."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO flights (flight_id, name, source, started_at) VALUES (?, ?, ?, ?)",
                [flight_id, name or flight_id, source, utcnow()],
            )
            return cur.rowcount == 1

    def end_flight(self, flight_id: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE flights SET ended_at = ? WHERE flight_id = ? AND ended_at IS NULL",
                [utcnow(), flight_id],
            )

    def end_orphan_flights(self, run_id: str) -> list[str]:
        """End the flights left open by a run that died (kill -9, power loss): at their last
        frame's classification, or their start when they have none. Flights with frames of
        ``run_id`` are this run's own and stay open. Returns the ids ended."""
        mine = "SELECT 1 FROM frames m WHERE m.flight_id = flights.flight_id AND m.run_id = ?"
        with self.transaction() as db:
            ids = [
                r[0]
                for r in db.execute(
                    f"SELECT flight_id FROM flights WHERE ended_at IS NULL AND NOT EXISTS ({mine})",
                    [run_id],
                )
            ]
            db.conn.executemany(
                "UPDATE flights SET ended_at = COALESCE((SELECT MAX(f.classified_at) FROM frames f "
                "WHERE f.flight_id = flights.flight_id), started_at) WHERE flight_id = ?",
                [(fid,) for fid in ids],
            )
        return ids

    def reopen_flight(self, flight_id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE flights SET ended_at = NULL WHERE flight_id = ?", [flight_id])

    def flight(self, flight_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM flights WHERE flight_id = ?", [flight_id]).fetchone()
        return dict(row) if row else None

    def flights(self) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM flights ORDER BY started_at, flight_id")]

    # --- frames --------------------------------------------------------------------------------
    def has_frame(self, frame_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM frames WHERE frame_id = ?", [frame_id]).fetchone() is not None

    def known_frame_ids(self, frame_ids: Iterable[str]) -> set[str]:
        ids = list(frame_ids)
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = f"SELECT frame_id FROM frames WHERE frame_id IN ({','.join('?' * len(chunk))})"
            found.update(r[0] for r in self.db.execute(q, chunk))
        return found

    def add_frames(self, rows: list[dict[str, Any]]) -> list[str]:
        """Insert frame rows in one transaction; return the ids that were new.

        A frame already present (same content seen again: a rescan, a restart, a copy) is left
        as it is: the first result stands and the flight counts are not touched twice.
        """
        inserted: list[str] = []
        # flight_id -> [frames, classified, damaged, rejected] added by this batch
        counts: dict[str, list[int]] = {}
        with self.transaction() as db:
            conn = db.conn
            for row in rows:
                r = dict(row)
                if r.get("warnings") == []:
                    r["warnings"] = None  # NULL when a frame had nothing odd about it
                for k in JSON_COLUMNS:
                    if isinstance(r.get(k), (list, dict)):
                        r[k] = json.dumps(r[k], separators=(",", ":"))
                r.setdefault("classified_at", utcnow())
                if r["status"] not in FRAME_STATUSES:
                    raise ValueError(f"bad frame status {r['status']!r}")
                fid = r["flight_id"]
                if fid not in counts:
                    counts[fid] = [0, 0, 0, 0]
                    conn.execute(
                        "INSERT OR IGNORE INTO flights (flight_id, name, started_at) VALUES (?, ?, ?)",
                        [fid, fid, r["classified_at"]],
                    )
                cols = list(r)
                cur = conn.execute(
                    f"INSERT OR IGNORE INTO frames ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                    [r[c] for c in cols],
                )
                if cur.rowcount != 1:
                    continue
                inserted.append(r["frame_id"])
                c = counts[fid]
                c[0] += 1
                c[1] += r["status"] == "classified"
                c[2] += r.get("label") == "damaged"
                c[3] += r["status"] == "rejected"
            # One update per flight and batch, in the same transaction as the rows it counts.
            for fid, (n, classified, damaged, rejected) in counts.items():
                if n:
                    conn.execute(
                        "UPDATE flights SET frames = frames + ?, classified = classified + ?, "
                        "damaged = damaged + ?, rejected = rejected + ? WHERE flight_id = ?",
                        [n, classified, damaged, rejected, fid],
                    )
        return inserted

    def frame(self, frame_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM frames WHERE frame_id = ?", [frame_id]).fetchone()
        return _decode_frame(row) if row else None

    def frames(self, flight_id: str | None = None, limit: int | None = None) -> list[dict]:
        q = "SELECT * FROM frames"
        args: list[Any] = []
        if flight_id is not None:
            q += " WHERE flight_id = ?"
            args.append(flight_id)
        q += " ORDER BY rowid"
        if limit is not None:
            q += f" LIMIT {int(limit)}"
        return [_decode_frame(r) for r in self.db.execute(q, args)]

    def count_frames(self, **where: Any) -> int:
        q = "SELECT COUNT(*) FROM frames"
        if where:
            q += " WHERE " + " AND ".join(f"{k} = ?" for k in where)
        return self.db.execute(q, list(where.values())).fetchone()[0]

    # --- deliveries (outbox) ---------------------------------------------------------------------
    def pending(self, target: str, limit: int = 500, where: str = "", args: Iterable[Any] = ()) -> list[dict]:
        """Frames not yet delivered to ``target`` (nor dropped), oldest first.

        ``where`` is an extra SQL condition on the frames table aliased ``f``
        (e.g. ``f.label = 'damaged'``).
        """
        q = (
            "SELECT f.*, f.rowid AS seq FROM frames f LEFT JOIN deliveries d "
            "ON d.target = ? AND d.frame_id = f.frame_id "
            "WHERE (d.state IS NULL OR d.state = 'failed')"
        )
        if where:
            q += f" AND ({where})"
        q += " ORDER BY f.rowid LIMIT ?"
        return [_decode_frame(r) for r in self.db.execute(q, [target, *args, limit])]

    def count_pending(self, target: str, where: str = "", args: Iterable[Any] = ()) -> int:
        q = (
            "SELECT COUNT(*) FROM frames f LEFT JOIN deliveries d "
            "ON d.target = ? AND d.frame_id = f.frame_id "
            "WHERE (d.state IS NULL OR d.state = 'failed')"
        )
        if where:
            q += f" AND ({where})"
        return self.db.execute(q, [target, *args]).fetchone()[0]

    def mark_delivered(self, target: str, frame_ids: Iterable[str], detail: dict | None = None) -> None:
        """Record that the remote confirmed these frames. Call only after the confirmation."""
        now = utcnow()
        d = json.dumps(detail) if detail else None
        with self.transaction() as db:
            db.conn.executemany(
                "INSERT INTO deliveries (target, frame_id, state, attempts, updated_at, detail) "
                "VALUES (?, ?, 'done', 1, ?, ?) ON CONFLICT(target, frame_id) DO UPDATE SET "
                "state = 'done', attempts = attempts + 1, last_error = NULL, "
                "updated_at = excluded.updated_at, detail = excluded.detail",
                [(target, fid, now, d) for fid in frame_ids],
            )

    def mark_failed(self, target: str, frame_ids: Iterable[str], error: str) -> None:
        now = utcnow()
        with self.transaction() as db:
            db.conn.executemany(
                "INSERT INTO deliveries (target, frame_id, state, attempts, last_error, updated_at) "
                "VALUES (?, ?, 'failed', 1, ?, ?) ON CONFLICT(target, frame_id) DO UPDATE SET "
                "state = 'failed', attempts = attempts + 1, last_error = excluded.last_error, "
                "updated_at = excluded.updated_at",
                [(target, fid, error[:2000], now) for fid in frame_ids],
            )

    def mark_dropped(self, target: str, frame_ids: Iterable[str], why: str) -> None:
        now = utcnow()
        with self.transaction() as db:
            db.conn.executemany(
                "INSERT INTO deliveries (target, frame_id, state, last_error, updated_at) "
                "VALUES (?, ?, 'dropped', ?, ?) ON CONFLICT(target, frame_id) DO UPDATE SET "
                "state = 'dropped', last_error = excluded.last_error, updated_at = excluded.updated_at",
                [(target, fid, why, now) for fid in frame_ids],
            )

    def delivery(self, target: str, frame_id: str) -> dict | None:
        row = self.db.execute(
            "SELECT * FROM deliveries WHERE target = ? AND frame_id = ?", [target, frame_id]
        ).fetchone()
        return dict(row) if row else None


# Below this much free space a "disk I/O error" at open is taken for a full disk (see below).
LOW_SPACE_BYTES = 1024 * 1024


def is_disk_full(exc: BaseException, directory: Path | None = None) -> bool:
    """True when ``exc`` says that the file system holding ``directory`` is full.

    SQLite says ``database or disk is full`` (SQLITE_FULL) when a page write fails, but opening
    an existing database on a full disk fails with a plain ``disk I/O error``
    (SQLITE_IOERR_SHMSIZE: the WAL index cannot grow). That one counts as a full disk only when
    ``directory`` has (almost) no free space, so that a failing SD card still fails loudly.
    Our own :class:`StorageFull` (the storage budget) counts too.
    """
    if isinstance(exc, StorageFull):
        return True
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(exc, sqlite3.Error):
        return False
    msg = str(exc).lower()
    if "disk is full" in msg or "disk full" in msg or "no space" in msg:
        return True
    if "disk i/o error" not in msg or directory is None:
        return False
    try:
        return shutil.disk_usage(directory).free < LOW_SPACE_BYTES
    except OSError:
        return False


def open_when_room(
    open_fn: Callable[[], T], stop: threading.Event, directory: Path, what: str
) -> T | None:
    """``open_fn()``, retried with backoff while it fails because ``directory``'s disk is full.

    Start-up on a full disk waits for space the way ingest does mid-run: one "paused: disk
    full" line, retries with the agent's :class:`~agent.core.backoff.Backoff` (which logs the
    "recovered" line), and the result once there is room. Returns None when ``stop`` is set
    while waiting (SIGTERM: a clean exit); any other error propagates at once.
    """
    backoff = Backoff(f"storage {directory}", base_s=1.0, cap_s=30.0)
    while True:
        try:
            result = open_fn()
        except (OSError, sqlite3.Error) as exc:
            if not is_disk_full(exc, directory):
                raise
            if not backoff.down:
                log.error("paused: disk full: cannot open %s (%s); waiting for space", what, exc)
            backoff.failure(str(exc))
            if not backoff.wait(stop):
                log.warning("stopped while waiting for space to open %s", what)
                return None
            continue
        backoff.success()
        return result


def _decode_frame(row: sqlite3.Row) -> dict:
    d = dict(row)
    for k in JSON_COLUMNS:
        if isinstance(d.get(k), str):
            d[k] = json.loads(d[k])
    return d


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass. Used by tests and `--once`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
