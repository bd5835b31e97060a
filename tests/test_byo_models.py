"""Bring your own classifier: ONNX (built here with ``onnx.helper``), RGB inputs of another size,
2- and 4-class softmax outputs. Each converted model classifies real aerial tiles through the
engines the agent uses and gives what the source model gives, within 1e-4; models the engines
cannot run are refused at conversion and leave nothing behind; ``engine: auto`` on an ONNX model
never picks TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from agent.core.config import ModelConfig
from agent.core.errors import EngineUnavailable, ModelError
from models.card import load_card

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
cv2 = pytest.importorskip("cv2")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from models.convert import convert  # noqa: E402
from models.factory import create_frame_classifier  # noqa: E402
from models.openvino_engine import OpenVinoClassifier  # noqa: E402

# f32 weights (--fp32) and f32 inference: only float rounding separates the engines from the source.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def tiles(aerial_tiles) -> np.ndarray:
    paths = aerial_tiles["damaged"][:6] + aerial_tiles["undamaged"][:6]
    return np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths])


def _engines(card):
    """Every engine the card says can run it, compiled in f32."""
    out = [OpenVinoClassifier(card, precision="f32")]
    if card.supports("tensorflow"):
        from models.tensorflow_engine import TensorFlowClassifier

        out.append(TensorFlowClassifier(card))
    return out


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


# ------------------------------------------------------------------ ONNX graphs, numpy reference


def _onnx_cnn(path: Path, channels: int, classes: int, seed: int = 3) -> dict[str, np.ndarray]:
    """A PyTorch-style (NCHW) CNN: Conv 3x3/2 -> ReLU -> global mean -> Gemm -> softmax or sigmoid."""
    rng = np.random.default_rng(seed)
    w = {"conv_w": rng.normal(0, 0.5, (6, channels, 3, 3)).astype(np.float32),
         "conv_b": rng.normal(0, 0.1, 6).astype(np.float32),
         "fc_w": rng.normal(0, 2.0, (6, classes)).astype(np.float32),
         "fc_b": rng.normal(0, 0.5, classes).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"]),
        helper.make_node("Softmax" if classes > 1 else "Sigmoid", ["logits"], ["y"], **(
            {"axis": 1} if classes > 1 else {})),
    ]
    _save_onnx(path, nodes, [("x", ["N", channels, 128, 128])], ("y", ["N", classes]), w)
    return w


def _save_onnx(path: Path, nodes, inputs, output, weights: dict[str, np.ndarray] | None = None) -> None:
    graph = helper.make_graph(
        nodes, "byo",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(output[0], TensorProto.FLOAT, output[1])],
        initializer=[numpy_helper.from_array(v, k) for k, v in (weights or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _numpy_cnn(w: dict[str, np.ndarray], tiles: np.ndarray, channels: int) -> np.ndarray:
    """What the ONNX graph computes, in float64 numpy: the reference the IR must match."""
    x = np.repeat(tiles.astype(np.float64)[:, None] / 255.0, channels, axis=1)  # gray -> NCHW
    win = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    c = np.einsum("nchwij,ocij->nohw", win, w["conv_w"]) + w["conv_b"][None, :, None, None]
    logits = np.maximum(c, 0).mean(axis=(2, 3)) @ w["fc_w"] + w["fc_b"]
    if logits.shape[1] == 1:
        return 1 / (1 + np.exp(-logits))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("channels", "classes", "damaged"),
    [(1, 1, None), (3, 4, [0, 2]), (3, 2, [1])],
    ids=["gray-sigmoid", "rgb-4class-softmax", "rgb-2class-softmax"],
)
def test_onnx_model_converts_and_matches_numpy(tmp_path, tiles, channels, classes, damaged):
    src = tmp_path / "mine.onnx"
    w = _onnx_cnn(src, channels, classes)
    out = tmp_path / "out"
    convert(src, out, damaged_classes=damaged, output_meaning="p_damaged", fp16=False)
    card = load_card(out)
    card.verify_all()
    assert card.engines == ["openvino"]  # TensorFlow has no ONNX runtime
    assert card.layout == "NCHW" and card.channels == channels and card.input_px == 128
    probs = _numpy_cnn(w, tiles, channels)
    expected = probs[:, 0] if classes == 1 else probs[:, damaged].sum(axis=1)
    assert np.ptp(expected) > 1e-3  # the output depends on the tile, or the check proves little
    (clf,) = _engines(card)
    np.testing.assert_allclose(clf.predict(tiles), expected, atol=TOLERANCE)
    # the async path decodes each request's rows the same way
    got = np.concatenate(clf.predict_async([tiles[:5], tiles[5:]]))
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    clf.close()


# ------------------------------------------------------------------ Keras models


def _keras_model(shape: tuple[int, int, int], classes: int, seed: int = 5):
    keras = pytest.importorskip("keras")
    from keras import layers

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(shape),
        layers.Conv2D(6, 3, strides=2, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(6, 3, activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(classes, activation="softmax" if classes > 1 else "sigmoid",
                     kernel_initializer=keras.initializers.RandomNormal(0, 3.0)),
    ])


def _keras_out(model, x_u8: np.ndarray, channels: int) -> np.ndarray:
    x = np.repeat(x_u8.astype(np.float32)[..., None] / 255.0, channels, axis=3)
    return np.asarray(model(x, training=False))


def test_rgb_224_keras_model_classifies_gray_tiles(tmp_path, tiles):
    model = _keras_model((224, 224, 3), 1)
    src = tmp_path / "rgb.keras"
    model.save(src)
    out = tmp_path / "out"
    convert(src, out, fp16=False)
    card = load_card(out)
    assert (card.input_px, card.channels, card.layout) == (224, 3, "NHWC")
    assert card.engines == ["openvino", "tensorflow"]
    # what the frame classifier hands over: tiles cut at the model's input size
    big = np.stack([cv2.resize(t, (224, 224), interpolation=cv2.INTER_LINEAR) for t in tiles])
    expected = 1.0 - _keras_out(model, big, 3)[:, 0]  # output.meaning p_undamaged
    assert np.ptp(expected) > 1e-3
    engines = _engines(card)
    for clf in engines:
        np.testing.assert_allclose(clf.predict(big), expected, atol=TOLERANCE, err_msg=clf.engine)
    # 128 px tiles are resized in the graph, the same way by both engines
    ov_small, tf_small = (clf.predict(tiles) for clf in engines)
    np.testing.assert_allclose(ov_small, tf_small, atol=TOLERANCE)
    for clf in engines:
        clf.close()


@pytest.mark.parametrize(("classes", "damaged"), [(2, [0]), (4, [1, 3])], ids=["2class", "4class"])
def test_softmax_keras_model_sums_damaged_classes_per_tile(tmp_path, tiles, classes, damaged):
    model = _keras_model((128, 128, 1), classes)
    src = tmp_path / "soft.keras"
    model.save(src)
    out = tmp_path / "out"
    labels = [f"c{i}" for i in range(classes)]
    convert(src, out, damaged_classes=damaged, labels=labels, fp16=False)
    card = load_card(out)
    assert card.output_kind == "softmax" and card.classes == classes
    assert card.damaged_classes == damaged and card.data["labels"]["0"] == "c0"
    expected = _keras_out(model, tiles, 1)[:, damaged].sum(axis=1)
    assert np.ptp(expected) > 1e-3
    for clf in _engines(card):
        # one value per tile, each from its own row: the TensorFlow engine used to flatten
        # the (N, C) output and hand tile 0's second class to tile 1
        got = clf.predict(tiles)
        assert got.shape == (len(tiles),)
        np.testing.assert_allclose(got, expected, atol=TOLERANCE, err_msg=clf.engine)
        clf.close()


# ------------------------------------------------------------------ refused at conversion


def _pool_graph(path: Path, input_shapes: list[list], out_shape: list, two_inputs: bool = False,
                softmax: bool = False) -> None:
    nodes = []
    src = "x0"
    if two_inputs:
        nodes.append(helper.make_node("Add", ["x0", "x1"], ["s"]))
        src = "s"
    nodes.append(helper.make_node("GlobalAveragePool", [src], ["g"]))
    if len(out_shape) == 2:
        nodes.append(helper.make_node("Flatten", ["g"], ["f"]))
        nodes.append(helper.make_node("Softmax" if softmax else "Sigmoid", ["f"], ["y"]))
    else:
        nodes.append(helper.make_node("Sigmoid", ["g"], ["y"]))
    _save_onnx(path, nodes, [(f"x{i}", s) for i, s in enumerate(input_shapes)], ("y", out_shape))


BAD_ONNX = {
    "two-inputs": (dict(input_shapes=[["N", 1, 64, 64]] * 2, out_shape=["N", 1], two_inputs=True),
                   {}, "2 inputs"),
    "dynamic-size": (dict(input_shapes=[["N", 1, "H", "W"]], out_shape=["N", 1]), {}, "dynamic height"),
    "non-square": (dict(input_shapes=[["N", 1, 64, 48]], out_shape=["N", 1]), {}, "64x48"),
    "two-channels": (dict(input_shapes=[["N", 2, 64, 64]], out_shape=["N", 2], softmax=True),
                     {"damaged_classes": [0]}, "2 channels"),
    "output-rank-4": (dict(input_shapes=[["N", 1, 64, 64]], out_shape=["N", 1, 1, 1]), {}, r"not \[N, 1\]"),
    "softmax-of-1": (dict(input_shapes=[["N", 1, 64, 64]], out_shape=["N", 1]),
                     {"output_kind": "softmax"}, "at least 2 classes"),
    "softmax-no-damaged": (dict(input_shapes=[["N", 3, 64, 64]], out_shape=["N", 3], softmax=True),
                           {}, "damaged-classes"),
    "damaged-out-of-range": (dict(input_shapes=[["N", 3, 64, 64]], out_shape=["N", 3], softmax=True),
                             {"damaged_classes": [3]}, "0..2"),
}


@pytest.mark.parametrize("case", list(BAD_ONNX))
def test_unrunnable_onnx_model_is_refused_at_conversion(tmp_path, case):
    graph, kwargs, message = BAD_ONNX[case]
    src = tmp_path / "src" / "bad.onnx"
    src.parent.mkdir()
    _pool_graph(src, **graph)
    parent = tmp_path / "models"
    parent.mkdir()
    with pytest.raises(ModelError, match=message):
        convert(src, parent / "bad", **kwargs)
    assert _leftovers(parent) == []


def test_non_square_keras_model_leaves_nothing_behind(tmp_path):
    """Before: the IR was written, then the input check failed: model.xml/.bin without a card."""
    model = _keras_model((128, 96, 1), 1)
    src = tmp_path / "wide.keras"
    model.save(src)
    parent = tmp_path / "models"
    parent.mkdir()
    with pytest.raises(ModelError, match="128x96"):
        convert(src, parent / "wide")
    assert _leftovers(parent) == []


def test_failure_while_writing_keeps_the_old_model_and_leaves_nothing(tmp_path, monkeypatch):
    import models.convert as mc

    src = tmp_path / "m.onnx"
    _onnx_cnn(src, 1, 1)
    out = tmp_path / "models" / "mine"
    convert(src, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(model_dir, data):
        (model_dir / "model_card.json").write_text("{")  # half-written, then the disk fills
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mc, "write_card", disk_full)
    with pytest.raises(OSError, match="No space"):
        convert(src, out)
    assert _leftovers(out.parent) == ["mine"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    load_card(out).verify_all()


# ------------------------------------------------------------------ engine choice


def test_engine_auto_never_picks_tensorflow_for_an_onnx_model(tmp_path, tiles):
    src = tmp_path / "m.onnx"
    w = _onnx_cnn(src, 3, 2)
    out = tmp_path / "out"
    convert(src, out, damaged_classes=[1], fp16=False)
    fc = create_frame_classifier(ModelConfig(path=out, devices=["CPU"], precision="f32"), None)
    try:
        assert fc.engine == "openvino"
        assert all(not c.name.startswith("tensorflow") for c in fc._pending)
        np.testing.assert_allclose(fc.predict_tiles(tiles), _numpy_cnn(w, tiles, 3)[:, 1], atol=TOLERANCE)
    finally:
        fc.close()
    # no OpenVINO device here: nothing to fall back to, and the error says why
    with pytest.raises(EngineUnavailable, match="tensorflow cannot run this model"):
        create_frame_classifier(ModelConfig(path=out, devices=["NPU"]), None)
    with pytest.raises(ModelError, match="runs only on openvino.*onnx"):
        create_frame_classifier(ModelConfig(path=out, engine="tensorflow"), None)
