"""The messages of configuration errors: the origin, then one ``dotted.key: problem`` line each."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def report(origin: str, problems: list[tuple[str, str]]) -> str:
    """The message of a :class:`ConfigError`: the origin, then one ``dotted.key: problem`` line each."""
    return "\n".join([f"{origin}: invalid configuration", *(f"  {k}: {m}" for k, m in problems)])


def format_errors(err: ValidationError, origin: str) -> str:
    """The message of the :class:`ConfigError` for a pydantic validation error."""
    problems = []
    for e in err.errors():
        # pydantic appends union-member names ("str", "int", "function-after[...]") to the
        # location; drop them.
        loc = tuple(
            p for p in e["loc"] if p not in ("str", "int") and not str(p).startswith("function-")
        )
        msg = e["msg"]
        if e["type"] == "value_error":  # our own checks: their message without "Value error, "
            msg = str(e.get("ctx", {}).get("error", msg))
        elif e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `skysift config example` lists every key)"
        problems.append((_dotted(loc), msg))
    return report(origin, problems)
