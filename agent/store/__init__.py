"""The SQLite buffer: the source of truth for frames, flights, runs and deliveries, with the
sync batches, the disk budget and which images are owed to GCS in modules of their own."""

from agent.store.db import Store, utcnow, wait_for

__all__ = ["Store", "utcnow", "wait_for"]
