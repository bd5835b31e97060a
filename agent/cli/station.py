"""`skysift station`: the live damage map of every device on the broker, for the ground station."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

#: loopback only: the LAN needs an explicit --listen, and then a token
DEFAULT_LISTEN = "127.0.0.1:8080"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "station",
        help="serve the live damage map of every device on the broker (ground station)",
        description="Subscribe to <mqtt.topic_prefix>/+/status, /frames and /flights/# on the "
        "configured broker, keep what is heard in station.db and serve the damage map live "
        "(Server-Sent Events), with each device's status and links. No network beyond the broker.",
    )
    p.add_argument("--listen", default=DEFAULT_LISTEN,
                   help=f"HOST:PORT to serve on (default: {DEFAULT_LISTEN}, loopback only); any "
                   "other address, e.g. 0.0.0.0:8080 for the LAN, needs --token-file")
    p.add_argument("--token-file", type=Path, default=None,
                   help="file holding the access token (16+ characters); requests then need "
                   "?token=... or 'Authorization: Bearer ...'")
    p.add_argument("--db", type=Path, default=Path("station.db"),
                   help="the station's own SQLite file (default: ./station.db)")
    p.add_argument("--title", default="Ground station: live damage map", help="page title")
    p.set_defaults(func=_station)


def _station(args: argparse.Namespace) -> int:
    from agent.cli.common import load
    from agent.station import Station
    from models.card import load_card

    cfg = load(args)
    # the model's own decision threshold, as `skysift report` uses: the same tiles are damaged
    station = Station(cfg, args.db, args.listen, args.token_file,
                      threshold=load_card(cfg.model.path).p_damaged_threshold, title=args.title)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    station.start()
    print(f"station: {station.url}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        station.stop()
    return 0
