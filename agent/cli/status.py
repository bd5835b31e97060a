"""`skysift status [--json]`: what the agent is doing, from the database and its state file.

Works whether the agent runs (as a service or in a shell) or not: the database says what was
classified and what still waits for sync; ``<storage.dir>/state.json``, rewritten every few
seconds by the running agent, says whether it is alive and how fast it goes.
"""

from __future__ import annotations

import argparse
import json

from agent.cli.common import load


def _status(args: argparse.Namespace) -> int:
    from agent.service.status import collect, format_text

    cfg = load(args)
    report = collect(cfg)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        print(format_text(report))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="engine, flights, frames, sync backlog, links, disk and rate of the agent",
        description="What the agent is doing, from its database and state file: works whether "
        "it runs (as a service or in a shell) or not. Run it again, or under `watch`, to follow "
        "a flight.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_status)
