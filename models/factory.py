"""Picks the inference engine and device from ``model.*`` and builds the FrameClassifier.

Order of preference (``model.engine: auto``): OpenVINO on each device of ``model.devices`` in
turn, then TensorFlow. A device missing from ``Core().available_devices`` is skipped with a log
line saying why; one that fails to compile falls to the next; at run time a failing inference
moves on down the same list (see :class:`models.frame.FrameClassifier`). ``engine: openvino``
never falls back to TensorFlow, ``engine: tensorflow`` never touches OpenVINO.

The engine modules are imported here, lazily: ``tensorflow`` is imported only if the
TensorFlow candidate is actually built.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.core.config import ModelConfig
from agent.core.errors import EngineUnavailable
from models.card import ModelCard, load_card
from models.frame import EngineCandidate, FrameClassifier

log = logging.getLogger(__name__)


def openvino_candidates(
    card: ModelCard,
    devices: list[str],
    precision: str,
    cache_dir: Path | None,
    performance_hint: str = "LATENCY",
) -> tuple[list[EngineCandidate], list[str]]:
    """One candidate per usable OpenVINO device, and why the others cannot be used."""
    try:
        from models import openvino_engine as ove

        available = list(ove.core().available_devices)
    except Exception as exc:  # ImportError, or a broken install failing in its own way
        log.warning("OpenVINO is unavailable (%s: %s)", type(exc).__name__, exc)
        return [], [f"openvino: cannot be imported ({type(exc).__name__}: {exc})"]
    out, skipped = [], []
    for device in devices:
        reason = ove.device_skip_reason(device, available)
        if reason:
            # A retired device means the config was written for old hardware: say it loudly.
            # An absent GPU/NPU is the normal case on a CPU-only box.
            level = logging.WARNING if device.split(".")[0] in ove.RETIRED_DEVICES else logging.INFO
            log.log(level, "skipping OpenVINO device %s: %s", device, reason)
            skipped.append(f"openvino/{device}: {reason}")
            continue

        def build(device: str = device):
            return ove.OpenVinoClassifier(
                card, device=device, precision=precision, cache_dir=cache_dir, performance_hint=performance_hint
            )

        out.append(EngineCandidate(f"openvino/{device}", build))
    return out, skipped


def tensorflow_candidate(card: ModelCard, precision: str) -> EngineCandidate:
    def build():
        try:
            from models.tensorflow_engine import TensorFlowClassifier
        except ImportError as exc:  # pragma: no cover - the module itself has no hard deps
            raise EngineUnavailable(f"TensorFlow engine cannot load: {exc}") from exc
        if precision not in ("auto", "f32"):
            log.info("the TensorFlow engine runs in f32 (model.precision %s applies to OpenVINO)", precision)
        return TensorFlowClassifier(card)

    return EngineCandidate("tensorflow/CPU", build)


def create_frame_classifier(
    model_cfg: ModelConfig, cache_dir: Path | None, bus=None
) -> FrameClassifier:
    """The FrameClassifier for ``model_cfg``; raises EngineUnavailable when nothing can run.

    Raises :class:`agent.core.errors.ModelError` (not a fallback) when the model files are missing
    or do not match their card: a damaged model is a problem to fix, not to route around.
    """
    card = load_card(model_cfg.path)
    candidates: list[EngineCandidate] = []
    not_used: list[str] = []
    if model_cfg.engine in ("auto", "openvino"):
        candidates, skipped = openvino_candidates(
            card, model_cfg.devices, model_cfg.precision, cache_dir, model_cfg.performance_hint.upper()
        )
        if not candidates:
            log.warning("no OpenVINO device of %s can be used here", model_cfg.devices)
            # Only a fallback when OpenVINO as a whole is out; skipping an absent GPU
            # before a working CPU is the normal case, not an event.
            not_used = skipped
    if model_cfg.engine in ("auto", "tensorflow"):
        candidates.append(tensorflow_candidate(card, model_cfg.precision))
    if not candidates:
        raise EngineUnavailable(
            f"model.engine is {model_cfg.engine} but no device of model.devices {model_cfg.devices} "
            "can be used here"
        )
    return FrameClassifier(
        card,
        candidates,
        tile_px=model_cfg.tile_px,
        batch_size=model_cfg.batch_size,
        damaged_fraction=model_cfg.damaged_fraction,
        bus=bus,
        unavailable=not_used,
    )
