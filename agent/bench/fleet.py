"""Fleet simulation: N devices sync at once into one GCS and one BigQuery emulator, through faults.

Every device has its own storage directory, database and ``device_id``; its frames (the shared
aerial tiles made distinct, see :mod:`agent.bench.fleet_data`) are committed to its database as
ingest would, in two waves. The devices' real sync loops run in K processes of several devices
each (:mod:`agent.bench.fleet_device`), against one fake-gcs-server and one local-bigquery
(:mod:`sync.emulators`); BigQuery is reached through :class:`agent.bench.fleet_proxy.QuotaProxy`.
While they sync, in this order:

1. one device process gets ``kill -9`` while its devices still owe work, and is restarted;
2. after ``N/2`` load jobs the proxy answers every job insert with 403 ``quotaExceeded`` for
   ``quota_window_s`` seconds;
3. the link goes down: both emulators are stopped and, ``outage_s`` seconds later,
   restarted on the same ports, their data kept (see :meth:`_Fleet._outage`);
4. the second wave of frames is committed and every flight ended (flight rows become owed);
5. once loading resumed, another device process gets ``kill -9`` and is restarted.

Then every process must finish by itself, and the remote must hold each frame exactly once:
GCS objects = BigQuery rows = distinct (device_id, frame_id) in BigQuery = the classified
frames of all the local databases, with ``upload_images: all``. The raw table is counted, not
only the de-duplicated view: load jobs with deterministic job ids are exactly once, so a
duplicate row anywhere is a bug the view would hide.

``python -m agent.bench.fleet run --devices 100`` prints the figures as JSON;
``skysift bench --fleet 100`` puts them in the report; ``tests/test_fleet.py`` runs a small fleet.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.bench.fleet_data import add_frames, load_tiles, write_config
from agent.bench.fleet_device import CONFIG_NAME, peak_rss_mb, serve
from agent.bench.fleet_proxy import QuotaProxy
from agent.bench.fleet_report import verify
from agent.bench.options import DEFAULT_DATA
from agent.core.config import load_config

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]

Say = Callable[[str], None]


class FleetError(Exception):
    """The fleet did not finish: a device process failed, or a step ran past the time limit."""


@dataclass
class FleetOptions:
    """How big a fleet, and how hard a time it is given."""

    devices: int = 100
    frames_per_device: int = 100
    devices_per_process: int = 10
    batch_rows: int = 500
    quota_window_s: float = 4.0
    outage_s: float = 2.0
    timeout_s: float = 900.0
    data_dir: Path = DEFAULT_DATA
    work_dir: Path | None = None  # default: a temp dir, removed afterwards


@dataclass
class _Slot:
    """One device process, across its restarts."""

    index: int
    dirs: list[Path]
    proc: subprocess.Popen | None = None
    runs: int = 0
    peak_mb: float = 0.0
    done: bool = False
    logs: list[Path] = field(default_factory=list)


def run_fleet(opts: FleetOptions, progress: Say | None = None) -> dict[str, Any]:
    """Run the simulation; return the figures and the exactly-once checks (JSON-able)."""
    if opts.devices < 4 or opts.frames_per_device < 2:
        raise ValueError("a fleet needs at least 4 devices of 2 frames (the faults are spread over them)")
    if opts.work_dir is not None and Path(opts.work_dir).is_dir() and any(Path(opts.work_dir).iterdir()):
        # an earlier run's databases and emulator data would be counted with this run's
        raise ValueError(f"the fleet's work directory {opts.work_dir} must be new or empty")
    say = progress or (lambda msg: log.info("%s", msg))
    work = Path(opts.work_dir or tempfile.mkdtemp(prefix="skysift-fleet-"))
    fleet = _Fleet(opts, work, say)
    try:
        return fleet.run()
    finally:
        fleet.stop()
        if opts.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


class _Fleet:
    def __init__(self, opts: FleetOptions, work: Path, say: Say):
        from sync.emulators import FakeGcs, LocalBigQuery

        self.opts = opts
        self.work = work
        self.say = say
        self.gcs = FakeGcs(work / "gcs")
        self.bq = LocalBigQuery(work / "bq")
        self.proxy: QuotaProxy | None = None
        self.slots: list[_Slot] = []
        self.devices: list[tuple[str, Path]] = []
        self.flag = work / "ingest-done"
        self.pids: list[int] = []
        self.events: list[dict[str, Any]] = []
        self.emulator_peak_mb: dict[str, float] = {}
        self.deadline = time.monotonic() + opts.timeout_s
        self.t0 = time.monotonic()

    def run(self) -> dict[str, Any]:
        o = self.opts
        self.say(f"fleet: {o.devices} devices, {o.frames_per_device} frames each, "
                 f"{math.ceil(o.devices / o.devices_per_process)} processes")
        for e in (self.gcs, self.bq):
            e.start()
            self.pids.append(e.proc.pid)
        self.proxy = QuotaProxy(self.bq.port, max(1, o.devices // 2), o.quota_window_s).start()
        sync = self._sync_config()
        self._init_remote()
        tiles = load_tiles(Path(o.data_dir))
        first = o.frames_per_device // 2
        for i in range(o.devices):
            device_id = f"fleet-{i:04d}"
            cfg = load_config(write_config(self.work / "devices" / device_id, device_id, sync))
            add_frames(cfg.db_path, device_id, tiles, 0, first, end_flight=False)
            self.devices.append((device_id, cfg.db_path))
        dirs = [self.work / "devices" / d for d, _ in self.devices]
        per = o.devices_per_process
        self.slots = [_Slot(k, dirs[k * per:(k + 1) * per]) for k in range(math.ceil(len(dirs) / per))]
        self.say("fleet: devices syncing")
        self.t0 = time.monotonic()
        for slot in self.slots:
            self._spawn(slot)
        self._faults(tiles, first)
        self._wait(lambda: all(s.done for s in self.slots), "every device process to finish")
        wall = time.monotonic() - self.t0
        self.say("fleet: counting what arrived")
        checks = verify(self._direct_config(), self.devices, self.bq.endpoint)
        return self._result(wall, checks)

    def _sync_config(self) -> dict[str, Any]:
        from sync.emulators import BQ_PROJECT

        return {
            "gcs": {"bucket": "skysift-fleet", "endpoint": self.gcs.endpoint},
            "bigquery": {
                "project": BQ_PROJECT, "dataset": "fleet", "endpoint": self.proxy.endpoint,
                # the proxy's quota refills after its window; without this a refused device
                # would rightly wait for the next UTC midnight, as for a spent daily quota
                "quota_window_s": self.opts.quota_window_s,
            },
            "upload_images": "all",
            "batch_rows": self.opts.batch_rows,
            "interval_s": 1.0,
            # short backoffs: the outages here last seconds, and the run should not idle after
            "backoff_max_s": 3.0,
        }

    def _direct_config(self) -> Any:
        """A configuration that reaches the emulators directly (set-up and counting stay out
        of the proxy's job count)."""
        from agent.core.config import parse_config

        sync = self._sync_config()
        sync["bigquery"]["endpoint"] = self.bq.endpoint
        return parse_config({"device_id": "fleet-driver", "storage": {"dir": str(self.work / "driver")},
                             "sync": sync})

    def _init_remote(self) -> None:
        from sync.bigquery import init_dataset
        from sync.gcs import init_bucket

        cfg = self._direct_config()
        init_bucket(cfg)
        init_dataset(cfg)

    def _faults(self, tiles: list, first: int) -> None:
        """The fault schedule of the module docstring, steps 1 to 5."""
        o, proxy = self.opts, self.proxy
        self._wait(lambda: proxy.jobs_ok >= max(1, o.devices // 4), "the first load jobs")
        self._kill(self.slots[0])
        self._wait(lambda: proxy.window is not None, "the quota window")
        self._event("quota window opened", proxy.jobs_ok)
        self._wait(lambda: time.monotonic() > proxy.window[1], "the end of the quota window")
        self._event("quota window closed", proxy.jobs_ok)
        self._outage()
        jobs_before = proxy.jobs_ok
        for device_id, db in self.devices:
            add_frames(db, device_id, tiles, first, o.frames_per_device - first, end_flight=True)
        self.flag.write_text("no more frames\n")
        self._event("second wave committed, flights ended", proxy.jobs_ok)
        self._wait(lambda: proxy.jobs_ok > jobs_before, "loading to resume")
        self._kill(self.slots[-1])

    def _outage(self) -> None:
        """Both emulators stopped and started again, the link down in between.

        The BigQuery link goes down at the proxy first, and the emulator is stopped only once
        it has no unfinished job: local-bigquery 0.3.2 does not resume a job that was pending
        when it stopped (it stays PENDING for ever, which BigQuery never does), and every
        device waiting on one would wait for ever too.
        """
        from sync.clients import bigquery_client

        bq = bigquery_client(self._direct_config())
        self.proxy.down = True
        self.gcs.stop()
        self._event("link down, GCS emulator stopped", self.proxy.jobs_ok)
        self._wait(lambda: all(j.state == "DONE" for j in bq.list_jobs(all_users=True)),
                   "the BigQuery emulator's jobs to finish")
        self.bq.stop()
        self._event("BigQuery emulator stopped", self.proxy.jobs_ok)
        time.sleep(self.opts.outage_s)
        for e in (self.gcs, self.bq):
            e.start()
            self.pids.append(e.proc.pid)
        self.proxy.down = False
        self._event("emulators restarted", self.proxy.jobs_ok)

    def _event(self, what: str, jobs: int, **extra: Any) -> None:
        self.events.append({"t_s": round(time.monotonic() - self.t0, 2), "event": what, "jobs": jobs, **extra})
        self.say(f"fleet: {what}")

    def _spawn(self, slot: _Slot) -> None:
        slot.runs += 1
        path = self.work / "logs" / f"process-{slot.index}-run-{slot.runs}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        slot.logs.append(path)
        cmd = [sys.executable, "-m", "agent.bench.fleet", "device", "--ingest-done", str(self.flag),
               *map(str, slot.dirs)]
        # the child imports this checkout, whatever the caller's working directory
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        with open(path, "wb") as out:
            slot.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.work)
        self.pids.append(slot.proc.pid)

    def _kill(self, slot: _Slot) -> None:
        """``kill -9`` the slot's process while it has work, then start it again."""
        self._tick()
        owed = _owed(slot, self.devices)
        os.kill(slot.proc.pid, signal.SIGKILL)
        slot.proc.wait(30)
        self._event(f"kill -9 device process {slot.index}", self.proxy.jobs_ok, owed_at_kill=owed)
        self._spawn(slot)

    def _tick(self) -> None:
        """Watch the processes: peaks of memory, finished runs, failed ones."""
        for slot in self.slots:
            if slot.done or slot.proc is None:
                continue
            slot.peak_mb = max(slot.peak_mb, peak_rss_mb(slot.proc.pid) or 0.0)
            rc = slot.proc.poll()
            if rc is None:
                continue
            if rc != 0:
                tail = slot.logs[-1].read_text(errors="replace")[-2000:]
                raise FleetError(f"device process {slot.index} exited {rc}: {tail}")
            slot.done = True
            slot.peak_mb = max(slot.peak_mb, _reported_peak(slot.logs[-1]))
        for e in (self.gcs, self.bq):
            if e.proc is not None:
                peak = peak_rss_mb(e.proc.pid) or 0.0
                self.emulator_peak_mb[e.name] = max(self.emulator_peak_mb.get(e.name, 0.0), peak)

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        while True:
            self._tick()
            if ready():
                return
            if time.monotonic() > self.deadline:
                raise FleetError(f"timed out after {self.opts.timeout_s:.0f} s waiting for {what}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Every process started here, by pid: device processes first, then the services."""
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                os.kill(slot.proc.pid, signal.SIGKILL)
                slot.proc.wait(30)
        if self.proxy is not None:
            self.proxy.stop()
        for e in (self.gcs, self.bq):
            e.stop()

    def _result(self, wall: float, checks: dict[str, Any]) -> dict[str, Any]:
        from agent.bench.fleet_report import figures

        return figures(self.opts, wall, checks, self.proxy.stats(), self.events,
                       [s.peak_mb for s in self.slots], self.emulator_peak_mb, self.pids)


def _owed(slot: _Slot, devices: list[tuple[str, Path]]) -> int:
    """What the slot's devices still owe (rows, flights and images), read from their databases."""
    from agent.bench.fleet_device import owed_by
    from agent.store.db import Store

    total = 0
    for d in slot.dirs:
        cfg = load_config(d / CONFIG_NAME)
        store = Store(cfg.db_path, readonly=True)
        try:
            total += owed_by(cfg, store)
        finally:
            store.close()
    return total


def _reported_peak(log_path: Path) -> float:
    """The peak a device process printed as its last line when it finished."""
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            return float(json.loads(line).get("peak_rss_mb") or 0.0)
    return 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.bench.fleet", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the simulation, print the figures as JSON")
    r.add_argument("--devices", type=int, default=100)
    r.add_argument("--frames", type=int, default=100, help="frames per device")
    r.add_argument("--per-process", type=int, default=10, help="devices per process")
    r.add_argument("--timeout", type=float, default=900.0)
    r.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    r.add_argument("--work-dir", type=Path, default=None)
    d = sub.add_parser("device", help="(internal) the sync loops of the given device directories")
    d.add_argument("--ingest-done", type=Path, required=True, help="exists once no more frames come")
    d.add_argument("dirs", type=Path, nargs="+")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # SIGTERM (timeout, Ctrl-C's cousin) unwinds through the finally blocks, so the processes
    # started here are stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if a.cmd == "device":
        return serve(a.dirs, a.ingest_done)
    opts = FleetOptions(devices=a.devices, frames_per_device=a.frames, devices_per_process=a.per_process,
                        timeout_s=a.timeout, data_dir=a.data_dir, work_dir=a.work_dir)
    res = run_fleet(opts, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
