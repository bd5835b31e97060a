"""Remote commands over MQTT: ``<base>/cmd/<name>`` in, ``<base>/cmd/<name>/reply`` out.

A request payload is empty or a JSON object; an ``id`` in it is echoed in the reply so a
ground station can match answers to questions. Replies are JSON::

    {"command": "flight/start", "id": "42", "ok": true, "result": {"flight_id": "..."}}
    {"command": "sync", "id": null, "ok": false, "error": "sync is not configured ..."}

Every failure (unknown command, malformed payload, a handler that is not registered because the
part is not configured, a handler that raises) becomes an error reply: a command from the
ground must never take the agent down.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from agent.core.runtime import AgentContext

log = logging.getLogger(__name__)


class CommandError(Exception):
    """A command cannot be carried out; the message goes back in the error reply."""


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
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise CommandError("malformed payload: 'name' must be a non-empty string")
        flight_id = _call(self.ctx, "flight_start", "flight/start", name=name.strip() if name else None)
        return {"flight_id": flight_id}

    def _flight_end(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"flight_id": _call(self.ctx, "flight_end", "flight/end")}
