"""What `skysift status` shows, and the state file the running agent writes for it.

The database is the source of truth for everything durable (flights, frames, backlog, last
successful sync, the engine of the last run). What only the running process knows (is it alive,
frames per second right now, queue depth, link up or down, pause reason) it writes every few
seconds to ``<storage.dir>/state.json`` through :class:`StateFile`, atomically (write a temp file,
then rename), so that a reader never sees half a file and `skysift status` works from any shell
while the service runs, without talking to the process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.errors import SkysiftError

if TYPE_CHECKING:
    from agent.core.config import Config
    from agent.core.runtime import AgentContext
    from agent.store.db import Store
    from models.card import ModelCard

log = logging.getLogger(__name__)


class StatusError(SkysiftError):
    """The database or state file exists but cannot be read (usually: not run as root)."""


STATE_FILE = "state.json"
STATE_INTERVAL_S = 2.0
#: a state file older than this is from a process that died without cleaning up
STALE_AFTER_S = 30.0


def state_path(cfg: Config) -> Path:
    return cfg.storage.dir / STATE_FILE


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- the running agent's side ------------------------------------------------------------------

class StateFile:
    """Component: keeps ``<storage.dir>/state.json`` up to date while the agent runs."""

    name = "state_file"

    def __init__(self, interval_s: float = STATE_INTERVAL_S):
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx: AgentContext | None = None
        self._lock = threading.Lock()
        self._links: dict[str, dict[str, Any]] = {}
        self._fallbacks: list[dict[str, Any]] = []
        self.started_at = time.time()

    def start(self, ctx: AgentContext) -> None:
        self._ctx = ctx
        ctx.bus.subscribe("sync_state", self._on_sync_state)
        ctx.bus.subscribe("engine_fallback", self._on_fallback)
        self.write()
        self._thread = threading.Thread(target=self._loop, name="state-file", daemon=True)
        self._thread.start()

    def _on_sync_state(self, target: str, state: str, error: str | None = None, **_: Any) -> None:
        with self._lock:
            prev = self._links.get(target)
            since = prev["since"] if prev and prev["state"] == state else _iso(time.time())
            self._links[target] = {"state": state, "error": error, "since": since}

    def _on_fallback(self, **payload: Any) -> None:
        with self._lock:
            self._fallbacks.append({k: str(v) for k, v in payload.items()} | {"at": _iso(time.time())})
            del self._fallbacks[:-5]

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.write()
            except Exception:
                log.exception("cannot write %s; will retry", STATE_FILE)

    def snapshot(self) -> dict[str, Any]:
        ctx = self._ctx
        assert ctx is not None
        st = ctx.stats
        now = time.monotonic()
        with self._lock:
            links = {k: dict(v) for k, v in self._links.items()}
            fallbacks = list(self._fallbacks)
        return {
            "pid": os.getpid(),
            "run_id": ctx.run_id,
            "started_at": _iso(self.started_at),
            "updated_at": _iso(time.time()),
            "updated_unix": time.time(),
            "engine": st.engine,
            "device": st.device,
            "precision": st.precision,
            "model": st.model,
            "model_sha256": st.model_sha256,
            "current_flight": st.current_flight,
            "frames_committed": st.frames_committed,
            "frames_classified": st.frames_classified,
            "frames_rejected": st.frames_rejected,
            "frames_damaged": st.frames_damaged,
            "frames_dropped": st.frames_dropped,
            "engine_fallbacks": st.engine_fallbacks,
            "fallbacks": fallbacks,
            "fps_10s": round(st.fps(10.0), 3),
            "fps_60s": round(st.fps(60.0), 3),
            "queue_depth": st.queue_depth,
            "paused_reason": st.paused_reason,
            "last_progress_age_s": round(now - st.last_progress_monotonic, 1),
            "links": links,
            "sync_pending": dict(st.sync_pending),
            "mqtt": None if st.mqtt is None else dataclasses.asdict(st.mqtt),
        }

    def write(self) -> None:
        path = state_path(self._ctx.cfg)  # type: ignore[union-attr]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=1), encoding="utf-8")
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._ctx is not None:
            try:
                snap = self.snapshot()
                snap["stopped_at"] = snap["updated_at"]
                path = state_path(self._ctx.cfg)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(snap, indent=1), encoding="utf-8")
                os.replace(tmp, path)
            except OSError as exc:
                log.warning("cannot write the final %s: %s", STATE_FILE, exc)


# --- the reader's side (`skysift status`) ------------------------------------------------------

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
    from sync.pending import backlog

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
