"""A loopback HTTP proxy in front of the BigQuery emulator that runs out of load-job quota.

It forwards every request to the emulator and counts the job inserts (``POST
.../projects/<p>/jobs``, the multipart upload of a load job included). Once ``quota_after``
inserts have been forwarded it answers every insert for ``quota_window_s`` seconds with the 403
BigQuery sends when a project is over its load-job quota, then lets them through again. The
emulator itself enforces no quota, so this is the only way to see how the fleet behaves when
the real service says "slow down".

While ``down`` is set it answers every request 502 without asking the emulator: the link is
down, as seen from the devices.

The count of inserts that the emulator answered with 200 is the number of load jobs it
created: a retried job id answered 409 is not counted, a job whose reply was lost on the way
back to a killed device is.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from sync.emulators import free_port

#: a job insert: ``/bigquery/v2/projects/p/jobs`` or its upload form ``/upload/bigquery/...``
_JOBS = re.compile(r"/projects/[^/]+/jobs$")
#: headers that describe one hop, not the message (RFC 9110 section 7.6.1)
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-connection", "content-length", "host"}

QUOTA_BODY = json.dumps({
    "error": {
        "code": 403,
        "message": "Quota exceeded: Your project exceeded quota for imports per project.",
        "errors": [{"reason": "quotaExceeded", "domain": "global",
                    "message": "Quota exceeded: Your project exceeded quota for imports per project."}],
        "status": "PERMISSION_DENIED",
    }
}).encode()


class QuotaProxy:
    """The proxy: ``start``/``stop``; ``endpoint`` is what the devices are given.

    ``jobs_ok`` counts the inserts the emulator accepted, ``forwarded`` those sent on to it,
    ``refused`` the 403s sent, and
    ``window`` is the (start, end) of the quota window once it opened (monotonic seconds).
    """

    def __init__(self, upstream_port: int, quota_after: int, quota_window_s: float):
        self.upstream_port = upstream_port
        self.quota_after = quota_after
        self.quota_window_s = quota_window_s
        self.port = free_port()
        self.jobs_ok = 0
        self.forwarded = 0
        self.refused = 0
        self.window: tuple[float, float] | None = None
        self.down = False
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="quota-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> QuotaProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def refuse_now(self) -> bool:
        """Whether a job insert arriving now is refused (opens the window at the threshold)."""
        with self._lock:
            now = time.monotonic()
            # Inserts sent, not jobs created: the latter lag behind, and a fleet whose
            # inserts all arrive before the first job is created would never see the window.
            if self.window is None and self.forwarded >= self.quota_after:
                self.window = (now, now + self.quota_window_s)
            if self.window is not None and self.window[0] <= now < self.window[1]:
                self.refused += 1
                return True
            self.forwarded += 1
            return False

    def job_created(self) -> None:
        with self._lock:
            self.jobs_ok += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"jobs_created": self.jobs_ok, "quota_refusals": self.refused,
                    "quota_after_jobs": self.quota_after, "quota_window_s": self.quota_window_s,
                    "quota_window_opened": self.window is not None}


def _handler(proxy: QuotaProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # a request line per job would drown the bench
            pass

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if proxy.down:
                self._down()
                return
            is_job = self.command == "POST" and bool(_JOBS.search(urlsplit(self.path).path))
            if is_job and proxy.refuse_now():
                self._reply(403, QUOTA_BODY, [("Content-Type", "application/json; charset=UTF-8")])
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except OSError:  # the emulator is down (killed, restarting)
                self._down()
                return
            finally:
                conn.close()
            if is_job and resp.status == 200:
                proxy.job_created()
            self._reply(resp.status, data, [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP])

        def _down(self) -> None:
            # what a load balancer answers when the service behind it is gone
            self._reply(502, b'{"error":{"code":502,"message":"upstream down"}}',
                        [("Content-Type", "application/json")])

        def _reply(self, status: int, data: bytes, headers: list[tuple[str, str]]) -> None:
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            try:
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the device was killed while waiting: the emulator's work stands

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    return Handler
