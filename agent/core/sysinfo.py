"""What the 2020 study recorded about the machine with every result: one ``runs`` row per run.

Versions are read from package metadata, not by importing: importing TensorFlow only to print
its version would cost seconds and hundreds of MB. TensorFlow is listed only when this process
has actually imported it (the TensorFlow engine is in use).
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import uuid
from importlib import metadata
from typing import Any

from agent import __version__


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Processor", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_mb() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return None


def os_name() -> str:
    pretty = None
    try:
        info = platform.freedesktop_os_release()
        pretty = info.get("PRETTY_NAME")
    except (OSError, AttributeError):
        pass
    base = f"{platform.system()} {platform.release()} {platform.machine()}"
    return f"{pretty} ({base})" if pretty else base


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (containers, taskset)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def versions() -> dict[str, str]:
    out: dict[str, str | None] = {
        "skysift": __version__,
        "openvino": _dist_version("openvino"),
        "opencv": _dist_version("opencv-python-headless") or _dist_version("opencv-python"),
        "numpy": _dist_version("numpy"),
        "python": platform.python_version(),
    }
    if "tensorflow" in sys.modules:
        out["tensorflow"] = _dist_version("tensorflow-cpu") or _dist_version("tensorflow")
    return {k: v for k, v in out.items() if v}


def run_row(device_id: str, classifier: Any, run_id: str | None = None) -> dict[str, Any]:
    """The ``runs`` row for this process and classifier."""
    return {
        "run_id": run_id or uuid.uuid4().hex,
        "device_id": device_id,
        "hostname": socket.gethostname(),
        "os": os_name(),
        "cpu_model": cpu_model(),
        "cores": cores(),
        "memory_mb": memory_mb(),
        "python": platform.python_version(),
        "engine": getattr(classifier, "engine", None),
        "device": getattr(classifier, "device", None),
        "precision": getattr(classifier, "precision", None),
        "model_sha256": getattr(classifier, "model_sha256", None),
        "versions": versions(),
    }
