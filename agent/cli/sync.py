"""`skysift sync`: push the outbox to GCS and BigQuery.

- ``skysift sync init``: create the bucket, dataset, tables and de-duplicated views.
- ``skysift sync run --once``: push everything pending, exit 0 when all is done, 1 with a summary.
- ``skysift sync run``: run the sync loop in the foreground (without the agent) until Ctrl-C.
- ``skysift sync status``: what is pending per target, open batches, budget use.

0.1 spelled ``sync run`` as flags on ``sync`` itself (``skysift sync --once``, bare ``skysift
sync``): those still work until REMOVED_IN, with a warning (README "Changelog").
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time

from agent.cli.common import REMOVED_IN, deprecated, load, show_path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sync",
        help="push results to GCS and BigQuery (init, run, status)",
        description="Store and forward: push the local outbox to GCS and BigQuery, exactly once.",
    )
    # The 0.1 flag forms, on `sync` itself. Their own dests: argparse copies a subcommand's
    # defaults over the parent's values, which would erase `sync --once run`.
    old = f"deprecated (goes in {REMOVED_IN}): the same as on `sync run`"
    p.add_argument("--once", dest="old_once", action="store_true", help=old)
    p.add_argument("--timeout", dest="old_timeout", type=float, default=None, metavar="S", help=old)
    p.add_argument("--json", dest="old_json", action="store_true", help=old)
    p.set_defaults(func=_legacy)
    ssub = p.add_subparsers(dest="sync_command", metavar="ACTION")
    i = ssub.add_parser(
        "init",
        help="create the bucket, dataset, tables and de-duplicated views",
        description="Create what sync writes to: the GCS bucket (sync.gcs.bucket) and the "
        "BigQuery dataset, tables and de-duplicated views (sync.bigquery). Safe to run again.",
    )
    i.set_defaults(func=_cmd_init)
    r = ssub.add_parser(
        "run",
        help="sync until Ctrl-C, or everything pending once with --once",
        description="Push the outbox without the agent: until SIGINT/SIGTERM, or with --once "
        "everything pending now (exit 0 when all is done, 1 with a summary if not). One writer "
        "per storage directory: refused while the agent runs.",
    )
    r.add_argument("--once", action="store_true", help="push everything pending, then exit")
    r.add_argument(
        "--timeout", type=float, default=120.0, metavar="S",
        help="with --once: give up after S seconds of retrying (default 120)",
    )
    r.add_argument("--json", action="store_true", help="with --once: the summary as JSON")
    r.set_defaults(func=_cmd_run)
    st = ssub.add_parser(
        "status",
        help="pending work per target, open batches, failures and storage use",
        description="What still waits for each sync target, read from the database (read "
        "only: works while the agent runs).",
    )
    st.add_argument("--json", action="store_true", help="as JSON")
    st.set_defaults(func=_cmd_status)


def _legacy(args: argparse.Namespace) -> int:
    """`skysift sync [--once] [--timeout S] [--json]`, the 0.1 form of `skysift sync run`."""
    words = ["skysift sync"] + ["--once"] * args.old_once
    if args.old_timeout is not None:
        words.append(f"--timeout {args.old_timeout:g}")
    typed = " ".join(words + ["--json"] * args.old_json)
    deprecated(typed, typed.replace("skysift sync", "skysift sync run", 1))
    args.once, args.json = args.old_once, args.old_json
    args.timeout = 120.0 if args.old_timeout is None else args.old_timeout
    return _cmd_run(args)


def _cmd_init(args: argparse.Namespace) -> int:
    return _init(load(args))


def _cmd_status(args: argparse.Namespace) -> int:
    return _status(load(args), args.json or args.old_json)


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = load(args)
    from sync.loop import sync_configured

    if not sync_configured(cfg):
        print("skysift: no sync target configured (set sync.bigquery.project and/or sync.gcs.bucket)",
              file=sys.stderr)
        return 2
    from agent.store.lock import StorageLock

    # Pushing writes delivery state: one writer per storage directory, the agent included.
    with StorageLock(cfg.storage.dir):
        if args.once or args.old_once:
            timeout = args.timeout if args.old_timeout is None else args.old_timeout
            return _once(cfg, timeout, args.json or args.old_json)
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
        print(f"no database at {show_path(cfg.db_path)}")
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
