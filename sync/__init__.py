"""Store and forward: the SQLite outbox pushed to Google Cloud Storage and BigQuery, exactly once.

Targets (one module each, one interface in :mod:`sync.base`): :mod:`sync.bigquery` (frame rows
and flight rows) and :mod:`sync.gcs` (images). :mod:`sync.loop` runs them beside ingest;
:mod:`agent.store.retention` keeps the disk budget. Cloud libraries are imported only inside the targets.
What is still owed, per target, is counted in one place, :mod:`sync.pending`: :func:`backlog`
and :func:`per_target` are what every report asks.
"""

from sync.pending import backlog, owed, per_target

__all__ = ["backlog", "owed", "per_target"]
