"""The machine a bench ran on, recorded with every result so runs on other devices compare."""

from __future__ import annotations

import contextlib
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """What the 2020 study recorded with every result, so runs on other devices compare."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine(), "x86_64"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    mem_mb = None
    with contextlib.suppress(ValueError, OSError):
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mb": mem_mb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "isa": sorted(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_fp16") if f in flags),
        "load_avg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "versions": {
            k: _version(k)
            for k in ("skysift", "openvino", "tensorflow-cpu", "keras", "opencv-python-headless", "numpy", "simplejpeg", "pillow")
        },
    }


