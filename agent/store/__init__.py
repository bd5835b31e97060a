"""The SQLite buffer: the source of truth for frames, flights, runs and deliveries, with the
sync batches, the disk budget, which images are owed to GCS and the one-writer lock on the
storage directory in modules of their own."""

from agent.store.db import Store, is_disk_full, open_when_room, utcnow, wait_for
from agent.store.lock import StorageLock, StorageLocked

__all__ = [
    "StorageLock",
    "StorageLocked",
    "Store",
    "is_disk_full",
    "open_when_room",
    "utcnow",
    "wait_for",
]
