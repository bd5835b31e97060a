"""One process of the fleet: the real sync loops of several devices, without the model.

``python -m agent.bench.fleet device --ingest-done FILE DEVICE_DIR...`` starts one
:class:`sync.loop.SyncLoop` (the agent's own component, on its own thread and its own Store)
per device directory, each with that device's ``skysift.yaml``. The frames were committed to
the device databases by the fleet driver, as ingest would have; the loops see them on their
timer. The process exits 0 once ``FILE`` exists (no more frames will come) and nothing is owed
by any of its devices, and prints its peak memory as one JSON line.

Devices share a process so that a hundred of them fit in memory (the cloud libraries cost
most of a process's footprint, and are loaded once per process), and they are processes at
all so that the driver can ``kill -9`` one in the middle of a sync.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from agent.core.config import Config, load_config
from agent.core.events import EventBus
from agent.core.runtime import AgentContext, Stats
from agent.store.db import Store
from sync.loop import SyncLoop
from sync.pending import per_target

log = logging.getLogger(__name__)

#: the configuration file inside each device directory
CONFIG_NAME = "skysift.yaml"
#: seconds between two looks at the backlog
POLL_S = 0.5


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """VmHWM of a process in MB (None once it is gone or where /proc has no such line)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def owed_by(cfg: Config, store: Store) -> int:
    """Items (rows, flights, images) the device still owes to any target."""
    return sum(per_target(cfg, store).values())


def serve(device_dirs: list[Path], ingest_done: Path, backoff_base_s: float = 0.2) -> int:
    """Run the sync loops of ``device_dirs`` until all is delivered; return the exit status."""
    devices = [load_config(Path(d) / CONFIG_NAME) for d in device_dirs]
    loops: list[SyncLoop] = []
    stores: list[Store] = []
    try:
        for cfg in devices:
            ctx = AgentContext(cfg=cfg, bus=EventBus(), stats=Stats(), stop=threading.Event())
            # No drain on stop: the process stops only once nothing is owed.
            loop = SyncLoop(cfg, backoff_base_s=backoff_base_s, drain_on_stop_s=0)
            loop.start(ctx)
            loops.append(loop)
            stores.append(Store(cfg.db_path, readonly=True))
        # The flag is read before the backlog, so frames committed before it was written are
        # counted in the same look.
        pairs = list(zip(devices, stores, strict=True))
        while not (ingest_done.exists() and all(owed_by(c, s) == 0 for c, s in pairs)):
            time.sleep(POLL_S)
    finally:
        for loop in loops:
            loop.stop()
        for store in stores:
            store.close()
    print(json.dumps({"devices": len(devices), "peak_rss_mb": peak_rss_mb()}), flush=True)
    return 0
