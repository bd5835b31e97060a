"""The ground station's own SQLite file (station.db): what it heard from every device.

Its own small schema, not the agent's: ``devices`` (the last status message of each),
``flights`` (the last retained summary of each, keyed by device and flight) and ``frames`` (the
frame messages, keyed by device and frame id, with the optional thumbnail as JPEG bytes).
Messages are at least once (agent.live.outbox), so a frame heard twice replaces itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from agent.core.errors import SkysiftError
from agent.store.db import utcnow

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    heard_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS flights (
    device_id TEXT NOT NULL,
    flight_id TEXT NOT NULL,
    summary TEXT NOT NULL,
    heard_at TEXT NOT NULL,
    PRIMARY KEY (device_id, flight_id)
);
CREATE TABLE IF NOT EXISTS frames (
    device_id TEXT NOT NULL,
    frame_id TEXT NOT NULL,
    flight_id TEXT,
    message TEXT NOT NULL,
    thumbnail BLOB,
    heard_at TEXT NOT NULL,
    PRIMARY KEY (device_id, frame_id)
);
"""


class StationStoreError(SkysiftError):
    """station.db cannot be opened or created."""


class StationStore:
    """station.db. One connection shared by the writer thread and the web server's threads:
    SQLite serialises writers anyway, and a lock keeps the Python side to one at a time."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StationStoreError(f"cannot open the station database {self.path}: {exc}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def device_status(self, device_id: str, status: dict[str, Any]) -> None:
        """A status message (online, or the offline last will) of ``device_id``."""
        state = str(status.get("state") or "unknown")
        with self._lock, self.db:
            self.db.execute(
                "INSERT INTO devices (device_id, state, status, heard_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (device_id) DO UPDATE SET state = excluded.state, "
                "status = excluded.status, heard_at = excluded.heard_at",
                (device_id, state, json.dumps(status), utcnow()),
            )

    def flight(self, device_id: str, flight_id: str, summary: dict[str, Any]) -> None:
        """A retained flight summary."""
        with self._lock, self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO flights (device_id, flight_id, summary, heard_at) VALUES (?, ?, ?, ?)",
                (device_id, flight_id, json.dumps(summary), utcnow()),
            )

    def frame(self, device_id: str, message: dict[str, Any]) -> None:
        """A frame message; its ``thumbnail`` (base64 JPEG) is kept apart, as bytes."""
        msg = dict(message)
        thumb = msg.pop("thumbnail", None)
        try:
            jpeg = base64.b64decode(thumb, validate=True) if isinstance(thumb, str) else None
        except binascii.Error:
            jpeg = None  # a broken thumbnail loses the picture, not the frame
        with self._lock, self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO frames (device_id, frame_id, flight_id, message, thumbnail, heard_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (device_id, str(msg["frame_id"]), msg.get("flight_id"), json.dumps(msg), jpeg, utcnow()),
            )

    def devices(self) -> list[dict[str, Any]]:
        """Every device heard, with its last status and frame counts."""
        q = (
            "SELECT d.device_id, d.state, d.status, d.heard_at, "
            "(SELECT COUNT(*) FROM frames f WHERE f.device_id = d.device_id), "
            "(SELECT COUNT(*) FROM frames f WHERE f.device_id = d.device_id "
            " AND json_extract(f.message, '$.label') = 'damaged') "
            "FROM devices d ORDER BY d.device_id"
        )
        with self._lock:
            rows = self.db.execute(q).fetchall()
        return [
            {"device_id": r[0], "state": r[1], "status": json.loads(r[2]), "heard_at": r[3],
             "frames": r[4], "damaged": r[5]}
            for r in rows
        ]

    def flights(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.db.execute(
                "SELECT device_id, flight_id, summary FROM flights ORDER BY device_id, flight_id"
            ).fetchall()
        return [{"device_id": r[0], "flight_id": r[1], **json.loads(r[2])} for r in rows]

    def frames(self) -> list[dict[str, Any]]:
        """Every frame message, in the order heard, with ``device_id`` and ``has_thumbnail``."""
        with self._lock:
            rows = self.db.execute(
                "SELECT device_id, message, thumbnail IS NOT NULL FROM frames ORDER BY rowid"
            ).fetchall()
        return [{**json.loads(r[1]), "device_id": r[0], "has_thumbnail": bool(r[2])} for r in rows]

    def thumbnail(self, device_id: str, frame_id: str) -> bytes | None:
        with self._lock:
            row = self.db.execute(
                "SELECT thumbnail FROM frames WHERE device_id = ? AND frame_id = ?", (device_id, frame_id)
            ).fetchone()
        return None if row is None else row[0]
