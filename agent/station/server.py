"""The station's web server: the live damage map, its event stream and the frames' thumbnails.

Standard library only (``ThreadingHTTPServer``): one thread per request, and an event stream
holds its thread for as long as the page is open, which is fine for the few viewers of a ground
station. Routes: ``/`` the page (agent.report's, in live mode), ``/events`` Server-Sent Events
(one ``map`` event per change, the whole payload), ``/data`` the payload as JSON, and
``/thumb/<device>/<frame_id>`` a thumbnail. Nothing is fetched from anywhere else: the page is
self-contained, like a report.

It binds to loopback unless told otherwise; on any other address a token is required (the
map shows where the damage is, and the LAN of a disaster site is not a private one). With a
token every request needs ``?token=`` or an ``Authorization: Bearer`` header.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from agent.core.errors import SkysiftError
from agent.report.html import page_html
from agent.station.feed import MapFeed

log = logging.getLogger(__name__)

#: seconds between keep-alive comments on an idle event stream (proxies and browsers drop
#: silent connections; the comment also notices a viewer that went away)
HEARTBEAT_S = 15.0
#: a burst of frames becomes one update: the stream waits this long after a change
COALESCE_S = 0.3
TOKEN_MIN_CHARS = 16


class StationError(SkysiftError):
    """The station cannot start: a bad --listen, or a LAN address without a usable token."""


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise StationError(f"--listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def read_token(path: Path | None, host: str) -> str | None:
    """The token from ``path``; refuses a non-loopback ``host`` without one."""
    if path is None:
        if not is_loopback(host):
            raise StationError(f"--listen {host}: serving beyond loopback needs --token-file "
                               "(e.g. `openssl rand -hex 16 > station.token`)")
        return None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise StationError(f"--token-file: cannot read {path}: {exc.strerror or exc}") from None
    if len(token) < TOKEN_MIN_CHARS:
        raise StationError(f"--token-file {path}: the token must be at least {TOKEN_MIN_CHARS} characters")
    return token


class _Handler(BaseHTTPRequestHandler):
    server: StationServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s " + format, self.address_string(), *args)

    def _authorised(self, query: dict[str, list[str]]) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = query.get("token", [""])[0]
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[len("Bearer "):].strip()
        return hmac.compare_digest(given.encode(), token.encode())

    def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/favicon.ico":  # browsers ask for it unbidden, without the token
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            return
        if not self._authorised(parse_qs(url.query)):
            self._send(HTTPStatus.UNAUTHORIZED, b"a token is needed: ?token=... or Authorization: Bearer\n",
                       "text/plain; charset=utf-8")
            return
        feed = self.server.feed
        if url.path in ("/", "/index.html"):
            page = page_html(feed.payload()[1], self.server.title, live=True)
            self._send(HTTPStatus.OK, page.encode("utf-8"), "text/html; charset=utf-8")
        elif url.path == "/data":
            self._send(HTTPStatus.OK, json.dumps(feed.payload()[1]).encode(), "application/json")
        elif url.path == "/events":
            self._events(feed)
        elif url.path.startswith("/thumb/") and url.path.count("/") == 3:
            _, _, device, frame = url.path.split("/")
            jpeg = self.server.store.thumbnail(unquote(device), unquote(frame))
            if jpeg is None:
                self._send(HTTPStatus.NOT_FOUND, b"no thumbnail\n", "text/plain; charset=utf-8")
            else:
                self._send(HTTPStatus.OK, jpeg, "image/jpeg")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _events(self, feed: MapFeed) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.close_connection = True
        seen = feed.payload()[0]  # the page was served with this one, or one just before it
        try:
            self.wfile.write(b"retry: 2000\n\n")
            self.wfile.flush()
            stop = self.server.stopping
            while not stop.is_set():
                version = feed.wait(seen, HEARTBEAT_S)
                if version == seen:
                    self.wfile.write(b": idle\n\n")
                else:
                    stop.wait(COALESCE_S)
                    seen, payload = feed.payload()
                    data = json.dumps(payload, separators=(",", ":"), allow_nan=False)
                    self.wfile.write(b"event: map\ndata: " + data.encode("utf-8") + b"\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the viewer closed the page


class StationServer(ThreadingHTTPServer):
    """The HTTP server; :meth:`serve` runs it in a thread named ``station-http``."""

    daemon_threads = True  # open event streams must not hold up the exit

    def __init__(self, address: tuple[str, int], feed: MapFeed, token: str | None, title: str):
        self.feed = feed
        self.store = feed.store
        self.token = token
        self.title = title
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def serve(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="station-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.feed.changed()  # wakes the event streams, which then see `stopping`
        self.shutdown()
        self.server_close()
