"""`skysift model convert`: a user's .keras, legacy TF 1.x .h5 and SavedModel become IR + card,
and the IR computes what the original model computes on real aerial tiles."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from agent.cli.main import main
from agent.core.errors import ModelError
from models.card import load_card

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
keras = pytest.importorskip("keras")
cv2 = pytest.importorskip("cv2")
h5py = pytest.importorskip("h5py")

from models.convert import convert, ir_predict, rebuild_legacy_h5  # noqa: E402

# FP16-compressed weights: a sigmoid output moves by a few 1e-3 at most on a small model.
TOLERANCE = 1e-2


@pytest.fixture(scope="module")
def tiles(aerial_tiles) -> np.ndarray:
    paths = aerial_tiles["damaged"][:6] + aerial_tiles["undamaged"][:6]
    return np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths])


@pytest.fixture(scope="module")
def user_model():
    """A small, randomly initialised CNN of the shape users bring (128x128x1 in, sigmoid out)."""
    keras.utils.set_random_seed(11)
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((128, 128, 1)),
            layers.Conv2D(8, 3, strides=2, activation="relu", name="conv2d_1"),
            layers.MaxPooling2D(3, name="max_pooling2d_1"),
            layers.Dropout(0.5, name="dropout_1"),
            layers.Conv2D(8, 3, activation="relu", name="conv2d_2"),
            layers.Flatten(name="flatten_1"),
            layers.Dense(8, name="dense_1"),
            layers.Dense(1, activation="sigmoid", name="dense_2"),
        ]
    )


def _keras_out(model, tiles: np.ndarray) -> np.ndarray:
    return np.asarray(model(tiles.astype(np.float32)[..., None] / 255.0, training=False)).reshape(-1)


def _check_dir(out: Path, tiles: np.ndarray, expected: np.ndarray, fmt: str) -> dict:
    card = load_card(out)
    card.verify_all()
    assert card.input_px == 128 and card.channels == 1
    assert card.data["converted_from"]["format"] == fmt
    got = ir_predict(card.path_for("openvino"), tiles, scale=card.scale)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=TOLERANCE)
    # the outputs must depend on the image, or the comparison above proves little
    assert np.ptp(expected) > 1e-4
    return card.data


def test_convert_keras_file_via_cli(tmp_path, user_model, tiles):
    src = tmp_path / "mine.keras"
    user_model.save(src)
    out = tmp_path / "out"
    assert main(["model", "convert", str(src), "--out", str(out)]) == 0
    data = _check_dir(out, tiles, _keras_out(user_model, tiles), "keras")
    assert data["files"]["keras"] == "model.keras"
    reloaded = keras.models.load_model(out / "model.keras", compile=False)
    np.testing.assert_allclose(_keras_out(reloaded, tiles), _keras_out(user_model, tiles), atol=1e-6)


def _write_tf1_h5(model, path: Path) -> None:
    """Write ``model`` the way TF 1.x Keras 2.2 did: Keras 2 layer configs (batch_input_shape,
    dtype strings, initializer dicts), weights under model_weights/<layer>/<layer>/kernel:0."""
    layers_cfg = []
    for i, layer in enumerate(model.layers):
        conf = {"name": layer.name, "trainable": True, "dtype": "float32"}
        if i == 0:
            conf["batch_input_shape"] = [None, 128, 128, 1]
        kind = type(layer).__name__
        if kind == "Conv2D":
            conf.update(filters=layer.filters, kernel_size=list(layer.kernel_size),
                        strides=list(layer.strides), padding="valid", data_format="channels_last",
                        dilation_rate=[1, 1], activation=layer.activation.__name__, use_bias=True,
                        kernel_initializer={"class_name": "VarianceScaling", "config": {
                            "scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None}},
                        bias_initializer={"class_name": "Zeros", "config": {}},
                        kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                        kernel_constraint=None, bias_constraint=None)
        elif kind == "MaxPooling2D":
            conf.update(pool_size=list(layer.pool_size), padding="valid", strides=list(layer.strides),
                        data_format="channels_last")
        elif kind == "Dropout":
            conf.update(rate=0.5, noise_shape=None, seed=None)
        elif kind == "Flatten":
            conf.update(data_format="channels_last")
        elif kind == "Dense":
            conf.update(units=layer.units, activation=layer.activation.__name__, use_bias=True,
                        kernel_initializer={"class_name": "VarianceScaling", "config": {
                            "scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None}},
                        bias_initializer={"class_name": "Zeros", "config": {}},
                        kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                        kernel_constraint=None, bias_constraint=None)
        layers_cfg.append({"class_name": kind, "config": conf})
    config = {"class_name": "Sequential", "config": {"name": "sequential_1", "layers": layers_cfg}}
    training = {"optimizer_config": {"class_name": "Adam", "config": {"lr": 0.001, "decay": 0.0}},
                "loss": "binary_crossentropy", "metrics": ["accuracy"]}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.2.4-tf"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode()
        f.attrs["training_config"] = json.dumps(training).encode()
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        for layer in model.layers:
            lg = g.create_group(layer.name)
            names = [f"{layer.name}/{w}:0" for w in ("kernel", "bias")][: len(layer.weights)]
            lg.attrs["weight_names"] = [n.encode() for n in names]
            for n, w in zip(names, layer.get_weights(), strict=True):
                lg.create_dataset(n, data=w)


def test_convert_legacy_tf1_h5(tmp_path, user_model, tiles):
    src = tmp_path / "model_2020.h5"
    _write_tf1_h5(user_model, src)
    expected = _keras_out(user_model, tiles)
    # the rebuild path itself, whatever Keras 3 manages on its own
    rebuilt = rebuild_legacy_h5(src)
    np.testing.assert_allclose(_keras_out(rebuilt, tiles), expected, atol=1e-6)
    out = tmp_path / "out"
    convert(src, out)
    data = _check_dir(out, tiles, expected, "h5")
    assert data["converted_from"]["loader"] in ("keras", "h5-rebuild")
    assert data["files"]["keras"] == "model.keras"  # upgraded to Keras 3 for the TF engine


def test_convert_saved_model(tmp_path, user_model, tiles):
    src = tmp_path / "saved"
    user_model.export(str(src), format="tf_saved_model", verbose=False)
    out = tmp_path / "out"
    convert(src, out)
    data = _check_dir(out, tiles, _keras_out(user_model, tiles), "saved_model")
    assert "keras" not in data["files"]


def test_convert_errors_name_the_problem(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        convert(tmp_path / "missing.keras", tmp_path / "o1")
    (tmp_path / "notsaved").mkdir()
    with pytest.raises(ModelError, match="saved_model.pb"):
        convert(tmp_path / "notsaved", tmp_path / "o2")
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"this is not HDF5")
    with pytest.raises(ModelError, match="load_model failed.*rebuilding"):
        convert(bad, tmp_path / "o3")
    # through the CLI: exit 1 and a message, no traceback
    assert main(["model", "convert", str(bad), "--out", str(tmp_path / "o4")]) == 1


def test_convert_onnx_softmax_via_cli_and_info(tmp_path, capsys):
    """An ONNX file used to be handed to Keras and refused with a Keras error."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Concat", ["f", "f", "f"], ["c"], axis=1),
             helper.make_node("Softmax", ["c"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    src = tmp_path / "mine.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(src))
    out = tmp_path / "out"
    assert main(["model", "convert", str(src), "--out", str(out), "--damaged-classes", "0,2",
                 "--labels", "collapsed,intact,flooded", "--fp32"]) == 0
    data = load_card(out).data
    assert data["converted_from"]["format"] == "onnx" and data["engines"] == ["openvino"]
    assert data["output"] == {"kind": "softmax", "classes": 3} and data["damaged_classes"] == [0, 2]
    capsys.readouterr()
    assert main(["model", "info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "3-class softmax, p_damaged = p(collapsed, flooded)" in shown and "engines openvino" in shown


def test_cards_without_engines_field_support_what_their_files_allow():
    card = load_card()  # the shipped model: IR + .keras, written before the field existed
    assert "engines" not in card.data
    assert sorted(card.engines) == ["openvino", "tensorflow"] and card.output_kind == "sigmoid"
