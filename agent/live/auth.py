"""Signed MQTT commands: an HMAC-SHA256 envelope that only holders of a shared key can make.

The broker's ACL decides who may publish to ``<base>/cmd/`` (see docs/mosquitto-acl.example);
a signature adds a check the device makes itself, so a broker account that leaks, or a bridge
that forwards too much, cannot start flights. With ``mqtt.command_key_file`` set, every command
payload must be this JSON envelope::

    {"ts": 1764158400, "nonce": "3f9c2a...", "body": "{\\"name\\": \\"Sector 7\\"}", "sig": "<hex>"}

``ts`` is Unix seconds (an integer), ``nonce`` 8 to 64 characters of ``[A-Za-z0-9_-]`` never
used twice, ``body`` the command's own payload as a string (may be empty), and ``sig`` the hex
HMAC-SHA256, under the key, of ``"<device_id>\\n<topic>\\n<ts>\\n<nonce>\\n<body>"`` (UTF-8),
where ``topic`` is the full command topic, e.g. ``skysift/drone-7/cmd/flight/start``. Signing
the device and the topic means a command cannot be replayed to another device or turned into
another command. A ground station signs with :func:`sign_command`::

    python -c "import sys; from agent.live.auth import sign_command; \\
      sys.stdout.buffer.write(sign_command(open('key').read().strip().encode(), 'drone-7', \\
      'skysift/drone-7/cmd/flight/start', '{\\"name\\": \\"Sector 7\\"}'))" \\
      | mosquitto_pub -t skysift/drone-7/cmd/flight/start -s
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from agent.core.config import MqttConfig, resolve_secret_path
from agent.core.errors import ConfigError

#: the shortest key accepted: 16 bytes (32 hex digits) cannot be guessed
MIN_KEY_BYTES = 16
#: nonces remembered at most; at the configured rate limit far fewer arrive within the window
MAX_NONCES = 10_000
_NONCE = re.compile(r"[A-Za-z0-9_-]{8,64}")


class AuthError(Exception):
    """A command whose envelope is missing, malformed, stale, replayed or wrongly signed."""


def load_key(mc: MqttConfig) -> bytes | None:
    """The shared key from ``mqtt.command_key_file`` (also found in ``$CREDENTIALS_DIRECTORY``),
    or None when commands are not signed. Surrounding whitespace is not part of the key."""
    if mc.command_key_file is None:
        return None
    path = resolve_secret_path(mc.command_key_file)
    assert path is not None
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"mqtt.command_key_file: cannot read {path}: {exc.strerror or exc}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"mqtt.command_key_file: the key is shorter than {MIN_KEY_BYTES} bytes")
    return key


def _signature(key: bytes, device_id: str, topic: str, ts: int, nonce: str, body: str) -> str:
    msg = f"{device_id}\n{topic}\n{ts}\n{nonce}\n{body}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def sign_command(
    key: bytes, device_id: str, topic: str, body: str = "", *, ts: int | None = None, nonce: str | None = None
) -> bytes:
    """The signed envelope (JSON bytes) of command ``body`` for ``topic`` on ``device_id``."""
    ts = int(time.time()) if ts is None else ts
    nonce = secrets.token_hex(16) if nonce is None else nonce
    sig = _signature(key, device_id, topic, ts, nonce, body)
    return json.dumps({"ts": ts, "nonce": nonce, "body": body, "sig": sig}).encode()


class CommandAuth:
    """Checks envelopes for one device. Not thread-safe: the command thread owns it."""

    def __init__(
        self, key: bytes, device_id: str, max_age_s: float, clock: Callable[[], float] = time.time
    ):
        self._key = key
        self.device_id = device_id
        self.max_age_s = max_age_s
        self._clock = clock
        self._nonces: dict[str, float] = {}  # nonce -> its ts, kept while the ts is in the window

    def open(self, topic: str, payload: bytes) -> bytes:
        """The command body of a valid envelope; :class:`AuthError` says why it is refused."""
        ts, nonce, body, sig = _fields(payload)
        now = self._clock()
        if abs(now - ts) > self.max_age_s:
            raise AuthError(f"stale command: signed {now - ts:.0f}s ago (limit {self.max_age_s:g}s)")
        expected = _signature(self._key, self.device_id, topic, ts, nonce, body)
        if not hmac.compare_digest(expected, sig):
            raise AuthError("bad signature (wrong key, or signed for another device or command)")
        self._forget(now)
        if nonce in self._nonces:
            raise AuthError("replayed command: nonce seen before")
        if len(self._nonces) >= MAX_NONCES:
            # Forgetting a live nonce would let its command be replayed: refuse instead.
            raise AuthError("too many signed commands within the max age window")
        self._nonces[nonce] = ts
        return body.encode()

    def _forget(self, now: float) -> None:
        # A nonce older than the window is safe to drop: its envelope is refused as stale.
        for nonce in [n for n, ts in self._nonces.items() if now - ts > self.max_age_s]:
            del self._nonces[nonce]


def _fields(payload: bytes) -> tuple[int, str, str, str]:
    try:
        env = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AuthError("unsigned command: the payload is not a signed envelope") from None
    if not isinstance(env, dict) or not {"ts", "nonce", "body", "sig"} <= env.keys():
        raise AuthError("unsigned command: expected {\"ts\", \"nonce\", \"body\", \"sig\"}")
    ts, nonce, body, sig = env["ts"], env["nonce"], env["body"], env["sig"]
    # Bounded: a huge integer would overflow the float arithmetic of the age check.
    if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts < 2**40:
        raise AuthError("malformed envelope: 'ts' must be integer Unix seconds")
    if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
        raise AuthError("malformed envelope: 'nonce' must be 8 to 64 of [A-Za-z0-9_-]")
    if not isinstance(body, str) or not isinstance(sig, str):
        raise AuthError("malformed envelope: 'body' and 'sig' must be strings")
    return ts, nonce, body, sig
