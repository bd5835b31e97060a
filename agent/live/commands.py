"""Remote commands over MQTT: ``<base>/cmd/<name>`` in, ``<base>/cmd/<name>/reply`` out.

A request payload is empty or a JSON object; an ``id`` in it is echoed in the reply so a
ground station can match answers to questions. Replies are JSON::

    {"command": "flight/start", "id": "42", "ok": true, "result": {"flight_id": "..."}}
    {"command": "sync", "id": null, "ok": false, "error": "sync is not configured ..."}

Every failure (unknown command, malformed payload, a handler that is not registered because the
part is not configured, a handler that raises) becomes an error reply: a command from the
ground must never take the agent down. Before a command is queued, :class:`CommandGate` refuses
retained messages (a retained ``flight/start`` would run again at every start), payloads over
:data:`MAX_COMMAND_BYTES` and bursts beyond the per-topic token bucket; :class:`RefusalLog`
keeps each kind of refusal to one log line and then a summary now and then.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.core.config import MqttConfig
from agent.core.runtime import AgentContext
from agent.live.auth import AuthError, CommandAuth

log = logging.getLogger(__name__)


#: the largest command payload accepted; a real one is a few dozen bytes
MAX_COMMAND_BYTES = 4096
#: the longest flight name: it becomes the flight id, in topics, object names and file names
MAX_FLIGHT_NAME = 64
#: seconds between two summary lines of one kind of refusal
REFUSAL_LOG_EVERY_S = 60.0


class CommandError(Exception):
    """A command cannot be carried out; the message goes back in the error reply."""


def check_flight_name(name: Any) -> str:
    """A flight name from the ground, stripped; :class:`CommandError` when it is not a non-empty
    string of at most :data:`MAX_FLIGHT_NAME` printable characters without ``/ + #``."""
    if not isinstance(name, str) or not name.strip():
        raise CommandError("malformed payload: 'name' must be a non-empty string")
    name = name.strip()
    if len(name) > MAX_FLIGHT_NAME:
        raise CommandError(f"flight name too long: {len(name)} characters (at most {MAX_FLIGHT_NAME})")
    if not name.isprintable() or any(c in name for c in "/+#"):
        raise CommandError("flight name has forbidden characters (control characters, '/', '+' or '#')")
    return name


def refusal(name: str, reason: str) -> dict[str, Any]:
    """The reply to a command refused before it was read (its ``id`` is not trusted)."""
    return {"command": name, "id": None, "ok": False, "error": reason}


class RefusalLog:
    """Logs the first refusal of each kind, then one summary per :data:`REFUSAL_LOG_EVERY_S`
    with the count since the last line. Thread-safe: paho's thread and the command thread log."""

    def __init__(self, logger: logging.Logger, every_s: float = REFUSAL_LOG_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def refused(self, kind: str, name: str, reason: str) -> None:
        now = self._clock()
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            last = self._last.get(kind)
            if last is not None and now - last < self.every_s:
                self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
                return
            self._last[kind] = now
            more = self._unlogged.pop(kind, 0)
        if more:
            self.logger.warning("MQTT command %s refused: %s (and %d more %s refusals since the last line)",
                                name[:MAX_FLIGHT_NAME], reason, more, kind)
        else:
            self.logger.warning("MQTT command %s refused: %s", name[:MAX_FLIGHT_NAME], reason)


class TokenBucket:
    """``rate`` tokens a second up to ``burst``, one bucket per key (a command topic)."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    def take(self, key: str) -> bool:
        now = self._clock()
        tokens, when = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - when) * self.rate)
        ok = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if ok else tokens, now)
        return ok


class CommandGate:
    """What paho's thread checks before queueing a command: not retained, not too large, within
    the rate of its key (the command name; one shared key for unknown names, so that made-up
    topics cannot grow the buckets). :meth:`check` returns None to accept, else (kind, reason,
    reply?): a burst is answered once, at its first dropped command, not with one reply per drop."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self._bucket = TokenBucket(rate, burst, clock)
        self._dropping: set[str] = set()  # keys whose burst already got its one reply

    def check(self, key: str, payload: bytes, retained: bool) -> tuple[str, str, bool] | None:
        if retained:
            # A retained command is delivered again on every subscribe, i.e. at every start.
            return "retained", "ignored: retained command (publish commands without -r)", True
        if len(payload) > MAX_COMMAND_BYTES:
            return "size", f"payload too large: {len(payload)} bytes (at most {MAX_COMMAND_BYTES})", True
        if self._bucket.take(key):
            self._dropping.discard(key)
            return None
        first = key not in self._dropping
        self._dropping.add(key)
        return "rate", "rate limited: too many commands on this topic, dropped", first


def parse_request(payload: bytes) -> dict[str, Any]:
    """An empty payload is ``{}``; otherwise it must be a JSON object."""
    if not payload or not payload.strip():
        return {}
    try:
        req = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(f"malformed payload: not JSON ({exc})") from None
    if not isinstance(req, dict):
        raise CommandError("malformed payload: expected a JSON object")
    return req


def _call(ctx: AgentContext, handler: str, what: str, **kwargs: Any) -> Any:
    if handler not in ctx.commands:
        raise CommandError(f"{what} is not available on this device (no {handler!r} handler: "
                           "is that part configured?)")
    return ctx.command(handler, **kwargs)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


class CommandDispatcher:
    """Runs one command and builds its reply. ``status_now`` publishes the status and returns it."""

    def __init__(self, ctx: AgentContext, status_now: Callable[[], dict[str, Any]]):
        self.ctx = ctx
        self.handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "sync": self._sync,
            "flight/start": self._flight_start,
            "flight/end": self._flight_end,
            "status": lambda req: status_now(),
        }
        self._status_now = status_now

    @property
    def names(self) -> list[str]:
        return sorted(self.handlers)

    def handle(self, name: str, payload: bytes) -> dict[str, Any]:
        reply: dict[str, Any] = {"command": name, "id": None}
        try:
            req = parse_request(payload)
            cid = req.get("id")
            reply["id"] = cid if isinstance(cid, (str, int)) and not isinstance(cid, bool) else None
            fn = self.handlers.get(name)
            if fn is None:
                raise CommandError(f"unknown command {name!r}; known: {', '.join(self.names)}")
            result = fn(req)
            reply.update(ok=True, result=_jsonable(result))
        except CommandError as exc:
            reply.update(ok=False, error=str(exc))
        except Exception as exc:  # a handler bug must not reach paho's thread or kill ours
            log.exception("command %s failed", name)
            reply.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        return reply

    def _sync(self, req: dict[str, Any]) -> Any:
        result = _call(self.ctx, "sync_now", "sync")
        return {"requested": True} if result is None else result

    def _flight_start(self, req: dict[str, Any]) -> dict[str, Any]:
        name = req.get("name")
        name = None if name is None else check_flight_name(name)
        return {"flight_id": _call(self.ctx, "flight_start", "flight/start", name=name)}

    def _flight_end(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"flight_id": _call(self.ctx, "flight_end", "flight/end")}


class CommandInbox:
    """Commands from paho's thread to the command thread: :meth:`offer` gates and queues (paho's
    thread), :meth:`next` checks the signature and runs one (the command thread)."""

    def __init__(self, mc: MqttConfig, dispatcher: CommandDispatcher, auth: CommandAuth | None,
                 logger: logging.Logger, maxsize: int = 64):
        self.dispatcher = dispatcher
        self.auth = auth
        self.gate = CommandGate(mc.command_rate, mc.command_burst)
        self.refusals = RefusalLog(logger)
        self._log = logger
        self._queue: queue.Queue[tuple[str, str, bytes]] = queue.Queue(maxsize=maxsize)

    def offer(self, name: str, topic: str, payload: bytes, retained: bool) -> dict[str, Any] | None:
        """Queue a command; the refusal to reply with when it is refused (None: no reply)."""
        key = name if name in self.dispatcher.handlers else ""
        verdict = self.gate.check(key, payload, retained)
        if verdict is None:
            try:
                self._queue.put_nowait((name, topic, payload))
                return None
            except queue.Full:
                verdict = ("busy", "busy: too many commands waiting, dropped", True)
        kind, reason, reply = verdict
        self.refusals.refused(kind, name, reason)
        return refusal(name, reason) if reply else None

    def next(self, timeout: float) -> tuple[str, dict[str, Any]] | None:
        """Run the next command within ``timeout``; (name, reply), or None when none came."""
        try:
            name, topic, payload = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if self.auth is not None:
            try:
                payload = self.auth.open(topic, payload)
            except AuthError as exc:
                self.refusals.refused("auth", name, str(exc))
                return name, refusal(name, str(exc))
        reply = self.dispatcher.handle(name, payload)
        self._log.info("MQTT command %s: %s", name[:MAX_FLIGHT_NAME], "ok" if reply.get("ok") else reply.get("error"))
        return name, reply
