"""What `skysift status` shows: the database plus the running agent's state file.

The database is the source of truth for everything durable (flights, frames, backlog, last
successful sync, the engine of the last run); what only the running process knows comes from
``<storage.dir>/state.json`` (:mod:`agent.service.state_file`), trusted only while fresh and
its writer alive.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.errors import SkysiftError
from agent.service.state_file import state_path

if TYPE_CHECKING:
    from agent.core.config import Config
    from agent.store.db import Store
    from models.card import ModelCard

class StatusError(SkysiftError):
    """The database or state file exists but cannot be read (usually: not run as root)."""


#: a state file older than this is from a process that died without cleaning up
STALE_AFTER_S = 30.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by the service user
    return True


def read_state(cfg: Config) -> tuple[dict[str, Any] | None, bool]:
    """The state file's content (or None) and whether the agent that wrote it is running."""
    try:
        state = json.loads(state_path(cfg).read_text(encoding="utf-8"))
    except PermissionError:
        raise StatusError(_denied(state_path(cfg))) from None
    except (OSError, ValueError):
        return None, False
    fresh = time.time() - float(state.get("updated_unix", 0)) < STALE_AFTER_S
    running = fresh and "stopped_at" not in state and _pid_alive(int(state.get("pid", 0)))
    return state, running


def _denied(path: Path) -> str:
    return (
        f"cannot read {path}: permission denied (the service keeps its data private to its "
        "user; run `sudo skysift status`)"
    )


def disk_usage(path: Path) -> int:
    """Bytes used by the files under ``path`` (no symlinks followed)."""
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        else:
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def collect(cfg: Config) -> dict[str, Any]:
    """Everything `skysift status` reports, as one JSON-friendly dict."""
    from agent.store.db import Store

    state, running = read_state(cfg)
    out: dict[str, Any] = {
        "device_id": cfg.device_id,
        "running": running,
        "storage_dir": str(cfg.storage.dir),
        "database": str(cfg.db_path),
        "agent": state,
    }
    db_exists = cfg.db_path.exists()
    out["database_exists"] = db_exists
    if db_exists:
        if not os.access(cfg.db_path, os.R_OK):
            raise StatusError(_denied(cfg.db_path))
        store = Store(cfg.db_path, readonly=True)
        try:
            out.update(_from_db(store, cfg))
        finally:
            store.close()
    live = state if running else None
    last_run = out.get("last_run") or {}
    out["engine"] = {
        "engine": (live or {}).get("engine") or last_run.get("engine"),
        "device": (live or {}).get("device") or last_run.get("device"),
        "precision": (live or {}).get("precision") or last_run.get("precision"),
        "model": (live or {}).get("model"),
        "model_sha256": (live or {}).get("model_sha256") or last_run.get("model_sha256"),
    }
    if not out["engine"]["model"]:
        out["engine"]["model"] = _model_name(cfg, out["engine"]["model_sha256"])
    out["fps"] = {
        "now_10s": (live or {}).get("fps_10s"),
        "last_60s": out.pop("_fps_db", None),
    }
    out["links"] = (live or {}).get("links", {})
    storage_dir = cfg.storage.dir
    used = disk_usage(storage_dir) if storage_dir.exists() else 0
    free = None
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(storage_dir if storage_dir.exists() else storage_dir.parent).free
    budget = int(cfg.storage.max_gb * 1e9) if cfg.storage.max_gb else None
    out["disk"] = {
        "used_bytes": used,
        "budget_bytes": budget,
        "budget_used_pct": round(100.0 * used / budget, 1) if budget else None,
        "free_bytes": free,
        "min_free_bytes": int(cfg.storage.min_free_mb * 1e6),
    }
    out["paused_reason"] = (live or {}).get("paused_reason")
    return out


def model_label(card: ModelCard) -> str:
    """How reports name a model: its card's name and version."""
    return f"{card.data.get('name', card.dir.name)} v{card.data.get('version', '?')}"


def _model_name(cfg: Config, sha256: str | None) -> str | None:
    """Name and version from the configured model's card, when it is the model that ran."""
    from models.card import load_card

    try:
        card = load_card(cfg.model.path)
        name = model_label(card)
        if sha256 and card.sha256 != sha256:
            return f"a model other than the configured {name}"
        return name
    except Exception:  # a missing or broken card is for `skysift model info` to explain
        return None


def _from_db(store: Store, cfg: Config) -> dict[str, Any]:
    from sync import backlog

    db = store.db
    totals = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(status = 'classified'), 0), COALESCE(SUM(status = 'rejected'), 0), "
        "COALESCE(SUM(label = 'damaged'), 0) FROM frames"
    ).fetchone()
    flights = [dict(r) for r in db.execute(
        "SELECT flight_id, name, started_at, ended_at, frames, classified, damaged, rejected "
        "FROM flights ORDER BY started_at DESC, flight_id DESC LIMIT 5"
    )]
    n_flights = db.execute("SELECT COUNT(*) FROM flights").fetchone()[0]
    open_flights = [f["flight_id"] for f in flights if not f["ended_at"]]
    run = db.execute("SELECT * FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
    last_sync = {
        r[0]: r[1]
        for r in db.execute(
            "SELECT target, MAX(updated_at) FROM deliveries WHERE state = 'done' GROUP BY target"
        )
    }
    failed = {
        r[0]: r[1]
        for r in db.execute("SELECT target, COUNT(*) FROM deliveries WHERE state = 'failed' GROUP BY target")
    }
    since = datetime.fromtimestamp(time.time() - 60, timezone.utc).isoformat(timespec="milliseconds")
    recent = db.execute(
        "SELECT COUNT(*) FROM frames WHERE classified_at >= ?", [since.replace("+00:00", "Z")]
    ).fetchone()[0]
    return {
        "frames": {
            "total": totals[0],
            "classified": totals[1],
            "rejected": totals[2],
            "damaged": totals[3],
        },
        "flights": {"count": n_flights, "open": open_flights, "recent": flights},
        "backlog": backlog(cfg, store),
        "failed_deliveries": failed,
        "last_sync": last_sync,
        "last_run": dict(run) if run else None,
        "_fps_db": round(recent / 60.0, 3),
    }


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def format_text(s: dict[str, Any]) -> str:
    """The human-readable `skysift status` report."""
    lines: list[str] = []
    agent = s.get("agent") or {}
    if s["running"]:
        lines.append(f"agent     running (pid {agent.get('pid')}, since {agent.get('started_at')})")
    elif agent:
        last = agent.get("stopped_at") or agent.get("updated_at")
        lines.append(f"agent     not running (last seen {last})")
    else:
        lines.append("agent     not running (no state file yet)")
    e = s["engine"]
    model = e.get("model") or "model"
    sha = (e.get("model_sha256") or "")[:16]
    if e.get("engine"):
        lines.append(
            f"engine    {e['engine']} on {e.get('device') or '?'} ({e.get('precision') or '?'}), "
            f"{model} sha256 {sha or '?'}"
        )
    else:
        lines.append("engine    unknown (no run recorded yet)")
    if not s.get("database_exists"):
        lines.append(f"database  none yet at {s['database']}")
    else:
        f = s["frames"]
        lines.append(
            f"frames    {f['total']} total: {f['classified']} classified ({f['damaged']} damaged), "
            f"{f['rejected']} rejected"
        )
        fl = s["flights"]
        open_txt = f", open: {', '.join(fl['open'])}" if fl["open"] else ""
        lines.append(f"flights   {fl['count']}{open_txt}")
        for r in fl["recent"]:
            state = "open" if not r["ended_at"] else "ended"
            lines.append(
                f"          {r['flight_id']}: {r['frames']} frames, {r['damaged']} damaged, "
                f"{r['rejected']} rejected ({state}, started {r['started_at']})"
            )
    fps = s["fps"]
    now = f"{fps['now_10s']:.2f}/s now, " if fps.get("now_10s") is not None else ""
    if fps.get("last_60s") is not None or now:
        lines.append(f"rate      {now}{fps.get('last_60s') or 0:.2f}/s over the last 60 s")
    backlog = s.get("backlog") or {}
    if backlog:
        lines.append("backlog   " + ", ".join(f"{t} {n}" for t, n in sorted(backlog.items())))
    else:
        lines.append("backlog   no sync targets configured")
    last_sync = s.get("last_sync") or {}
    for t in sorted(set(backlog) | set(last_sync)):
        failed = (s.get("failed_deliveries") or {}).get(t)
        extra = f" ({failed} failed deliveries waiting for retry)" if failed else ""
        lines.append(f"sync      {t}: last success {last_sync.get(t) or 'never'}{extra}")
    for t, link in sorted((s.get("links") or {}).items()):
        err = f": {link['error']}" if link.get("error") else ""
        lines.append(f"link      {t} {link['state']} since {link['since']}{err}")
    d = s["disk"]
    budget = (
        f" of {_size(d['budget_bytes'])} budget ({d['budget_used_pct']}%)" if d["budget_bytes"] else " (no budget)"
    )
    lines.append(
        f"disk      {_size(d['used_bytes'])} used{budget}; {_size(d['free_bytes'])} free "
        f"(pause below {_size(d['min_free_bytes'])})"
    )
    if s["running"]:
        lines.append(
            f"pipeline  queue {agent.get('queue_depth', 0)}, dropped camera frames "
            f"{agent.get('frames_dropped', 0)}, engine fallbacks {agent.get('engine_fallbacks', 0)}"
        )
    if s.get("paused_reason"):
        lines.append(f"PAUSED    {s['paused_reason']}")
    return "\n".join(lines)
