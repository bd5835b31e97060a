"""A real TAK server for the tests (taky, from PyPI) and a real CoT client that reads from it."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from mosquitto import TlsFiles
from util import free_port, stop_pid, wait_port

ROOT = Path(__file__).resolve().parent.parent
EVENT_END = re.compile(rb"</event>|<event[^>]*/>")


def taky_python() -> str:
    """The Python that has taky: $SKYSIFT_TAKY_PYTHON, else the .venv-taky that .ci/run makes
    (taky ships a top-level ``tests`` package, so it stays out of the project's venv)."""
    python = os.environ.get("SKYSIFT_TAKY_PYTHON") or str(ROOT / ".venv-taky" / "bin" / "python")
    if not Path(python).exists():
        pytest.skip(f"taky is not installed ({python}): bash .ci/run installs it")
    return python


class Taky:
    """taky's CoT router on a free loopback port; TLS with client certificates when ``tls``."""

    def __init__(self, d: Path, tls: TlsFiles | None = None, port: int | None = None):
        self.dir = d
        self.tls = tls
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        d.mkdir(parents=True, exist_ok=True)
        lines = ["[taky]", "hostname = localhost", "node_id = SKYSIFT-TEST", "bind_ip = 127.0.0.1",
                 f"root_dir = {d}", "[cot_server]", f"port = {self.port}"]
        if tls is None:
            lines += ["[ssl]", "enabled = false"]
        else:
            lines += [f"mon_port = {free_port()}", "[ssl]", "enabled = true", "client_cert_required = true",
                      f"ca = {tls.ca}", f"cert = {tls.server_cert}", f"key = {tls.server_key}"]
        self.conf = d / "taky.conf"
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self) -> Taky:
        self.log = open(self.dir / "taky.log", "ab")  # noqa: SIM115  # closed in stop()
        self.proc = subprocess.Popen([taky_python(), "-m", "taky.cot", "-c", str(self.conf), "-l", "debug"],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        wait_port(self.port, timeout=30)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)
            self.proc = None
            self.log.close()


class CotClient:
    """A TAK client: connected to the server, it receives the events other clients send."""

    def __init__(self, port: int, tls: TlsFiles | None = None):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls is not None:
            ctx = ssl.create_default_context(cafile=str(tls.ca))
            ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key))
            sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        self.sock = sock
        self.buf = b""
        self.events: list[ET.Element] = []

    def receive(self, n: int, timeout: float = 30.0) -> list[ET.Element]:
        """Wait until ``n`` events came in (in all); return them, parsed."""
        deadline = time.monotonic() + timeout
        while len(self.events) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(self.events)} of {n} CoT events received")
            self.sock.settimeout(min(left, 1.0))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise ConnectionError(f"the server closed the connection after {len(self.events)} events")
            self.buf += data
            while (m := EVENT_END.search(self.buf)) is not None:
                chunk, self.buf = self.buf[: m.end()], self.buf[m.end():]
                start = chunk.find(b"<event")
                self.events.append(ET.fromstring(chunk[start:]))
        return self.events

    def close(self) -> None:
        self.sock.close()
