"""Run ``skysift classify`` many times under CPU load and count the exit statuses.

Not a pytest module (pytest collects ``test_*.py`` only): the abort it looks for (exit 134,
``terminate called without an active exception`` while the interpreter shuts down) is a race,
so one run proves nothing and forty take a while. ``tests/test_exit_status.py`` holds the
deterministic version that CI runs. Usage, from the repository root::

    PYTHONPATH=$PWD python tests/many_runs_exit.py --runs 40 --load 2

``--load N`` keeps N busy-loop processes running for the duration (they are killed at the end
however the script ends), the busy machine on which the abort showed up in about 1 run in 12.
The images are a few shared aerial tiles and the GPS-tagged EXIF samples: several batches, so
the engine's ``AsyncInferQueue`` is used. Prints one figure per exit status; exits 1 if any run
did not exit 0.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def default_images(data: Path) -> list[str]:
    """A few 128 px tiles (one batch each) and the 640x480 GPS samples (20 tiles each)."""
    tiles = sorted((data / "aerial-damage" / "damaged").glob("*.png"))[:3]
    gps = sorted((data / "exif-samples" / "gps").glob("*.jpg"))
    return [str(p) for p in tiles + gps]


def _busy(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        pass


def run_many(runs: int, images: list[str], timeout_s: float) -> collections.Counter:
    codes: collections.Counter = collections.Counter()
    cmd = [sys.executable, "-m", "agent", "classify", "--json", *images]
    for i in range(runs):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            code: int | str = p.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"  # a hang at exit is a failure too, not a pass
        codes[code] += 1
        print(f"run {i + 1}/{runs}: {code}", flush=True)
        if code not in (0, "timeout") and "terminate called" in p.stderr:
            print("  " + p.stderr.strip().splitlines()[-1], flush=True)
    return codes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--load", type=int, default=2, help="busy-loop processes while it runs")
    ap.add_argument("--max-seconds", type=float, default=300, help="bound on the busy loops")
    ap.add_argument("--timeout", type=float, default=60, help="per run, seconds")
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    ap.add_argument("images", nargs="*", help="images to classify (default: shared samples)")
    args = ap.parse_args()
    images = args.images or default_images(args.data)
    if not images:
        raise SystemExit(f"no images under {args.data}")
    env_path = os.environ.get("PYTHONPATH", "")
    print(f"{args.runs} runs, {len(images)} images, load {args.load}, PYTHONPATH={env_path}")
    stop_at = time.monotonic() + args.max_seconds
    loaders = [multiprocessing.Process(target=_busy, args=(stop_at,), daemon=True) for _ in range(args.load)]
    for p in loaders:
        p.start()
    try:
        codes = run_many(args.runs, images, args.timeout)
    finally:
        for p in loaders:
            p.terminate()
            p.join()
    print("exit statuses: " + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items(), key=str)))
    return 0 if set(codes) == {0} else 1


if __name__ == "__main__":
    sys.exit(main())
