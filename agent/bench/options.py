"""What a `skysift bench` run is asked to do (:class:`BenchOptions`) and how it fails (:class:`BenchError`).

Kept apart from the runner so that the measurement modules and the CLI share one definition
without importing the orchestration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "aerial-damage"


class BenchError(Exception):
    """A measurement failed; the message carries the child's last log lines."""


@dataclass
class BenchOptions:
    """Which measurements to run, on how many files, with which model settings.

    The defaults are the issue's full run; ``skysift bench`` flags override them one by one.
    """

    workloads: list[str] = field(default_factory=lambda: ["tiles", "frames"])
    n_tiles: int = 10_000
    n_frames: int = 300
    frame_tile_px: int = 512
    engines: list[str] | None = None  # None: every engine/device/precision present
    repeat: int = 1
    baseline: bool = True
    handbuilt: bool = True
    baseline_tiles: int = 200
    baseline_frames: int = 20
    stages: bool = True
    sync: bool = False
    memory: bool = False  # peak RSS on one 11000x10900 16-bit RGBA PNG
    sync_n: int = 10_000
    fleet: int = 0  # devices of the fleet simulation (agent.bench.fleet); 0: not run
    data_dir: Path = DEFAULT_DATA
    work_dir: Path | None = None  # workloads are cached here; default: a temp dir
    model_path: Path | None = None
    batch_size: int | None = None
    precision: str | None = None  # model.precision for the pipeline runs (default: auto)
    engine: str = "openvino"  # model.engine for the pipeline runs
    devices: list[str] = field(default_factory=lambda: ["CPU"])
    timeout_s: float = 1800.0
