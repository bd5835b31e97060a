"""Run the TAK sender of a configuration until its outbox is empty (the multicast test runs
this inside a network namespace of its own): ``python tests/tak_send.py CONFIG.yaml``."""

from __future__ import annotations

import sys
import threading
import time

from agent.core.config import load_config
from agent.core.events import EventBus
from agent.core.runtime import AgentContext, Stats
from agent.live.tak import TakSender
from agent.store.db import Store
from sync.pending import TAK


def main(path: str) -> int:
    cfg = load_config(path)
    sender = TakSender(cfg)
    sender.start(AgentContext(cfg=cfg, bus=EventBus(), stats=Stats(), stop=threading.Event()))
    store = Store(cfg.db_path)
    try:
        deadline = time.monotonic() + 30
        while store.count_pending(TAK) and time.monotonic() < deadline:
            time.sleep(0.05)
        return 0 if store.count_pending(TAK) == 0 else 1
    finally:
        store.close()
        sender.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
