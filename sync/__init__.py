"""Store and forward: the SQLite outbox pushed to Google Cloud Storage and BigQuery, exactly once.

Targets (one module each, one interface in :mod:`sync.base`): :mod:`sync.bigquery` (frame rows
and flight rows) and :mod:`sync.gcs` (images). :mod:`sync.loop` runs them beside ingest;
:mod:`agent.store.retention` keeps the disk budget. Cloud libraries are imported only inside the targets.
"""
