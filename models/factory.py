"""Picks the inference engine and device from ``model.*`` and builds the FrameClassifier.

Order of preference (``model.engine: auto``): OpenVINO on each device of ``model.devices`` in
turn, then TensorFlow. A device missing from ``Core().available_devices`` is skipped with a log
line saying why; one that fails to compile falls to the next; at run time a failing inference
moves on down the same list (see :class:`models.frame.FrameClassifier`). ``engine: openvino``
never falls back to TensorFlow, ``engine: tensorflow`` never touches OpenVINO.

Only the engines the card lists in ``engines`` are candidates: ``auto`` on an ONNX model (which
TensorFlow cannot run) has no TensorFlow fallback, and naming an engine the model does not
support is a :class:`ModelError` at start, not a fallback.

The engine modules are imported here, lazily: ``tensorflow`` is imported only if the
TensorFlow candidate is actually built.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.core.config import ModelConfig
from agent.core.errors import EngineUnavailable, ModelError
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
    wanted = ["openvino", "tensorflow"] if model_cfg.engine == "auto" else [model_cfg.engine]
    usable = [e for e in wanted if card.supports(e)]
    if not usable:
        source = card.data.get("converted_from", {}).get("format")
        raise ModelError(
            f"model.engine is {model_cfg.engine} but the model in {card.dir} runs only on "
            f"{' or '.join(card.engines) or 'no engine'} (its card's engines"
            + (f"; converted from {source}" if source else "") + ")"
        )
    candidates: list[EngineCandidate] = []
    not_used: list[str] = []
    if "openvino" in usable:
        candidates, skipped = openvino_candidates(
            card, model_cfg.devices, model_cfg.precision, cache_dir, model_cfg.performance_hint.upper()
        )
        if not candidates:
            log.warning("no OpenVINO device of %s can be used here", model_cfg.devices)
            # Only a fallback when OpenVINO as a whole is out; skipping an absent GPU
            # before a working CPU is the normal case, not an event.
            not_used = skipped
    if "tensorflow" in usable:
        candidates.append(tensorflow_candidate(card, model_cfg.precision))
    if not candidates:
        unsupported = [e for e in wanted if e not in usable]
        raise EngineUnavailable(
            f"model.engine is {model_cfg.engine} but no device of model.devices {model_cfg.devices} "
            "can be used here" + (f" ({' and '.join(unsupported)} cannot run this model)" if unsupported else "")
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
