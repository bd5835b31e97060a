"""What a converted model takes and gives, read from its OpenVINO graph: the card's ``input``,
``output``, ``labels`` and ``damaged_classes``.

Conversion refuses here, with the reason, every model the engines could not run: several
inputs or outputs, an input that is not one square image of fixed size with 1 or 3 channels,
an output that is not ``[N, 1]`` (sigmoid) or ``[N, C]`` (softmax, C >= 2). A model that
converts therefore classifies every frame; nothing is found out at the first inference.
"""

from __future__ import annotations

from typing import Any

from agent.core.errors import ModelError

#: channel counts an engine can feed from gray tiles (3: the gray tile replicated)
CHANNELS = (1, 3)


def _dims(partial_shape: Any) -> list[int | None]:
    if partial_shape.rank.is_dynamic:
        return []
    return [None if d.is_dynamic else d.get_length() for d in partial_shape]


def input_spec(ov_model: Any) -> dict[str, Any]:
    """The card's ``input`` section for ``ov_model``; ModelError when no engine can feed it."""
    if len(ov_model.inputs) != 1 or len(ov_model.outputs) != 1:
        raise ModelError(
            f"the model has {len(ov_model.inputs)} inputs and {len(ov_model.outputs)} outputs; "
            "skysift needs exactly one tile input and one output"
        )
    dims = _dims(ov_model.inputs[0].get_partial_shape())
    if len(dims) != 4:
        raise ModelError(f"the model input shape {dims or '(dynamic rank)'} is not one batch of images")
    # Channels last (Keras) when axes 1 and 2 look like a square image or the last axis like
    # channels; otherwise channels first (PyTorch-exported ONNX).
    nhwc = (dims[1] is not None and dims[1] == dims[2]) or dims[3] in CHANNELS
    layout = "NHWC" if nhwc else "NCHW"
    c, h, w = (dims[1], dims[2], dims[3]) if layout == "NCHW" else (dims[3], dims[1], dims[2])
    if h is None or w is None:
        raise ModelError(
            f"the model input {dims} has a dynamic height or width; skysift needs a fixed square "
            "input size (export the model with one)"
        )
    if h != w:
        raise ModelError(f"the model input is {h}x{w}; skysift tiles are square")
    if c not in CHANNELS:
        raise ModelError(
            f"the model input {dims} has {c if c is not None else 'a dynamic number of'} channels; "
            "skysift feeds 1 (gray) or 3 (gray replicated to RGB)"
        )
    return {"height": h, "width": w, "channels": c, "layout": layout, "dtype": "float32",
            "scale": 1 / 255}


def output_spec(
    ov_model: Any,
    kind: str | None = None,
    meaning: str = "p_undamaged",
    damaged_classes: list[int] | None = None,
    labels: list[str] | None = None,
) -> dict[str, Any]:
    """The card's ``output``, ``labels`` and ``damaged_classes`` for ``ov_model``.

    ``kind`` None takes it from the output's width: 1 is a sigmoid, C >= 2 a softmax. A softmax
    needs ``damaged_classes``: which classes count as damage is the user's to say, not a guess.
    """
    dims = _dims(ov_model.outputs[0].get_partial_shape())
    if len(dims) != 2 or dims[1] is None:
        raise ModelError(
            f"the model output shape {dims or '(dynamic rank)'} is not [N, 1] (sigmoid) or "
            "[N, C] (softmax): skysift needs one row of probabilities per tile"
        )
    width = dims[1]
    kind = kind or ("sigmoid" if width == 1 else "softmax")
    if kind == "sigmoid":
        if width != 1:
            raise ModelError(f"the model output is [N, {width}]; a sigmoid output is [N, 1]")
        if damaged_classes:
            raise ModelError("damaged classes are for softmax outputs; a sigmoid says its meaning")
        names = labels or ["damaged", "undamaged"]
        return {"output": {"kind": "sigmoid", "meaning": meaning}, "labels": _labels(names, 2)}
    if kind != "softmax":
        raise ModelError(f"output kind {kind!r} is not sigmoid or softmax")
    if width < 2:
        raise ModelError(f"the model output is [N, {width}]; a softmax needs at least 2 classes")
    if not damaged_classes:
        raise ModelError(
            f"the model has a {width}-class softmax output: say which classes are damage "
            "(--damaged-classes, e.g. 0 or 1,3)"
        )
    bad = [i for i in damaged_classes if not 0 <= i < width]
    if bad:
        raise ModelError(f"damaged classes {bad} are not among the model's classes 0..{width - 1}")
    if len(set(damaged_classes)) == width:
        raise ModelError("every class is listed as damaged: the model could never say undamaged")
    names = labels or [f"class{i}" for i in range(width)]
    return {
        "output": {"kind": "softmax", "classes": width},
        "labels": _labels(names, width),
        "damaged_classes": sorted(set(damaged_classes)),
    }


def _labels(names: list[str], n: int) -> dict[str, str]:
    if len(names) != n:
        raise ModelError(f"{len(names)} labels given for an output of {n} classes")
    return {str(i): name for i, name in enumerate(names)}
