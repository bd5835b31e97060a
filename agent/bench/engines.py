"""Per-image inference time of every engine, device and precision: which to measure, and the runs.

"Everything present" is asked of OpenVINO itself (its devices and their optimization
capabilities) and of the model card (whether an INT8 IR ships), so a machine with a GPU or
AMX measures what it has without a flag.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
from pathlib import Path
from typing import Any

from agent.bench.measure import run_child
from agent.bench.options import BenchError, BenchOptions

log = logging.getLogger(__name__)


def engine_specs(opts: BenchOptions) -> list[dict[str, str]]:
    """Every engine/device/precision to measure: from ``--engines``, or everything present.

    A spec is ``ENGINE[:DEVICE[:PRECISION]]``, e.g. ``openvino:CPU:int8`` or ``tensorflow``.
    """
    if opts.engines:
        specs = []
        for s in opts.engines:
            parts = s.split(":")
            if parts[0] not in ("openvino", "tensorflow"):
                raise BenchError(f"--engines: unknown engine {parts[0]!r} in {s!r} (openvino, tensorflow)")
            if parts[0] == "openvino" and len(parts) == 1:
                specs += _openvino_specs(opts)
                continue
            specs.append(
                {
                    "engine": parts[0],
                    "device": parts[1].upper() if len(parts) > 1 else "CPU",
                    "precision": parts[2] if len(parts) > 2 else "auto",
                }
            )
        return specs
    specs = _openvino_specs(opts)
    if importlib.util.find_spec("tensorflow") is not None:
        specs.append({"engine": "tensorflow", "device": "CPU", "precision": "auto"})
    return specs


def _openvino_specs(opts: BenchOptions) -> list[dict[str, str]]:
    try:
        import openvino as ov
    except ImportError:
        log.warning("openvino cannot be imported: no OpenVINO engine measured")
        return []
    from models.card import load_card

    has_int8 = False
    try:
        has_int8 = load_card(opts.model_path).has("openvino_int8")
    except Exception as exc:  # an unreadable card fails the engine runs with the real error
        log.warning("model card: %s", exc)
    core = ov.Core()
    specs = []
    for dev in core.available_devices:
        try:
            caps = set(core.get_property(dev, "OPTIMIZATION_CAPABILITIES"))
        except Exception:
            caps = set()
        precs = ["auto", "f32"]
        if "BF16" in caps:
            precs.append("bf16")
        if "FP16" in caps:
            precs.append("f16")
        if has_int8 and "INT8" in caps:
            precs.append("int8")
        specs += [{"engine": "openvino", "device": dev, "precision": p} for p in precs]
    return specs


def bench_engines(work: Path, opts: BenchOptions) -> list[dict[str, Any]]:
    out = []
    for spec in engine_specs(opts):
        args = {
            **spec,
            "model_path": str(opts.model_path) if opts.model_path else None,
            "cache_dir": str(work / "ov-cache"),
            "data_dir": str(opts.data_dir),
            "batch_size": opts.batch_size or 64,
        }
        try:
            out.append(run_child("engine", args, work / "engines.log", opts.timeout_s))
        except (BenchError, subprocess.TimeoutExpired) as exc:
            log.warning("engine %s: %s", spec, exc)
            out.append({"requested": spec, "error": str(exc).splitlines()[0]})
    return out


