"""`skysift sync`: push the outbox to GCS and BigQuery.

- ``skysift sync init``: create the bucket, dataset, tables and de-duplicated views.
- ``skysift sync --once``: push everything pending, exit 0 when all is done, 1 with a summary.
- ``skysift sync status``: what is pending per target, open batches, budget use.
- ``skysift sync``: run the sync loop in the foreground (without the agent) until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time

from agent.cli.common import load

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sync",
        help="push results to GCS and BigQuery (init, --once, status)",
        description="Store and forward: push the local outbox to GCS and BigQuery, exactly once.",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["init", "status", "run"],
        default="run",
        help="init: create bucket, dataset, tables, views; status: pending work; "
        "run (default): sync until Ctrl-C, or once with --once",
    )
    p.add_argument("--once", action="store_true", help="push everything pending, then exit")
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="with --once: give up after this many seconds of retrying (default 120)",
    )
    p.add_argument("--json", action="store_true", help="status/--once summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load(args)
    from sync.loop import sync_configured

    if args.action == "init":
        return _init(cfg)
    if args.action == "status":
        return _status(cfg, args.json)
    if not sync_configured(cfg):
        print("skysift: no sync target configured (set sync.bigquery.project and/or sync.gcs.bucket)",
              file=sys.stderr)
        return 2
    from agent.store.lock import StorageLock

    # Pushing writes delivery state: one writer per storage directory, the agent included.
    with StorageLock(cfg.storage.dir):
        if args.once:
            return _once(cfg, args.timeout, args.json)
        return _forever(cfg)


def _init(cfg) -> int:
    from sync.base import SyncError

    did = []
    try:
        if cfg.sync.gcs.bucket:
            from sync.gcs import init_bucket

            did.append(init_bucket(cfg))
        if cfg.sync.bigquery.project:
            from sync.bigquery import init_dataset

            did += init_dataset(cfg)
    except SyncError:
        raise
    except Exception as exc:  # a cloud error here is the user's answer: print it plainly
        print(f"skysift: sync init failed: {exc}", file=sys.stderr)
        return 1
    if not did:
        print("nothing to do: set sync.gcs.bucket and/or sync.bigquery.project")
        return 2
    for line in did:
        print(line)
    return 0


def _once(cfg, timeout: float, as_json: bool) -> int:
    from agent.store.db import Store
    from sync.loop import Syncer, build_targets

    store = Store(cfg.db_path)
    syncer = Syncer(cfg, store, build_targets(cfg))
    deadline = time.monotonic() + timeout
    pushed: dict[str, int] = {}
    try:
        while True:
            res = syncer.cycle(deadline=deadline)
            for k, v in res.pushed.items():
                pushed[k] = pushed.get(k, 0) + v
            if res.all_done or time.monotonic() >= deadline:
                break
            time.sleep(min(syncer.next_wait() or 0.2, max(0.0, deadline - time.monotonic())))
    finally:
        syncer.close()
        store.close()
    errors = syncer.errors()
    summary = {"pushed": pushed, "pending": res.pending, "errors": errors, "done": res.all_done}
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        for name, n in res.pending.items():
            line = f"{name}: {pushed.get(name, 0)} pushed, {n} pending"
            err = errors.get(syncer.links.get(name, name))
            if err and n:
                line += f" (last error: {err})"
            print(line)
    if not res.all_done:
        print("skysift: sync incomplete: items still pending", file=sys.stderr)
        return 1
    return 0


def _status(cfg, as_json: bool) -> int:
    from agent.store.db import Store
    from agent.store.retention import usage
    from sync import per_target

    if not cfg.db_path.exists():
        print(f"no database at {cfg.db_path}")
        return 0
    store = Store(cfg.db_path, readonly=True)
    try:
        out: dict = {"pending": per_target(cfg, store), "open_batches": {}, "failed": {}}
        try:
            for r in store.db.execute(
                "SELECT target, COUNT(*) n FROM sync_batches WHERE state = 'open' GROUP BY target"
            ):
                out["open_batches"][r["target"]] = r["n"]
        except Exception:  # an old database without migration 2 (read-only: not upgraded)
            pass
        for r in store.db.execute(
            "SELECT target, COUNT(*) n, MAX(last_error) e FROM deliveries "
            "WHERE state IN ('failed', 'dropped') GROUP BY target, state"
        ):
            out["failed"][r["target"]] = {"count": r["n"], "example": r["e"]}
        out["storage_used_mb"] = round(usage(store, cfg) / 1024**2, 1)
        out["storage_budget_gb"] = cfg.storage.max_gb
    finally:
        store.close()
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out["pending"].items():
            print(f"pending {k}: {v}")
        for k, v in out["open_batches"].items():
            print(f"open batch {k}: {v} (resumed at the next sync)")
        for k, v in out["failed"].items():
            print(f"failed/dropped {k}: {v['count']} (e.g. {v['example']})")
        budget = f" of {cfg.storage.max_gb:g} GB" if cfg.storage.max_gb else ""
        print(f"storage used: {out['storage_used_mb']} MB{budget}")
    return 0


def _forever(cfg) -> int:
    from agent.core.events import EventBus
    from agent.core.runtime import AgentContext, Stats
    from sync.loop import SyncLoop

    stop = threading.Event()
    ctx = AgentContext(cfg=cfg, bus=EventBus(), stats=Stats(), stop=stop)
    loop = SyncLoop(cfg)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    loop.start(ctx)
    log.info("syncing every %.0f s until interrupted", cfg.sync.interval_s)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        loop.stop()
    return 0
