"""What a bench child process reports and how: the result line, its peak RSS and CPU time.

Shared by :mod:`agent.bench.child` and the measurements it runs (:mod:`agent.bench.handbuilt`), and
read by the orchestrator. Only the standard library is imported, so a child's cold start is its own.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

RESULT_PREFIX = "SKYSIFT-BENCH "
#: wall-clock time (time.time()) at which the orchestrator spawned this process
T0_ENV = "SKYSIFT_BENCH_T0"


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MB (VmHWM: this process's own pages only)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def since_spawn_s() -> float | None:
    t0 = os.environ.get(T0_ENV)
    return time.time() - float(t0) if t0 else None


def summarize(ms: list[float]) -> dict[str, float]:
    """mean, p50, p95, min, max of a list of durations in ms."""
    if not ms:
        return {"n": 0}
    s = sorted(ms)

    def pct(p: float) -> float:
        # linear interpolation between closest ranks (numpy's default), without numpy
        k = (len(s) - 1) * p
        lo = int(k)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)

    return {
        "n": len(s),
        "mean": sum(s) / len(s),
        "p50": pct(0.50),
        "p95": pct(0.95),
        "min": s[0],
        "max": s[-1],
    }


def cpu_s() -> float:
    """User + system CPU time of this process so far, every thread included."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def emit(result: dict[str, Any]) -> None:
    result.setdefault("peak_rss_mb", round(peak_rss_mb(), 1))
    result.setdefault("cpu_s", cpu_s())
    result["tensorflow_loaded"] = "tensorflow" in sys.modules
    result["openvino_loaded"] = "openvino" in sys.modules
    print(RESULT_PREFIX + json.dumps(result), flush=True)
