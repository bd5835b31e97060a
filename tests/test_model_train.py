"""Training, the shipped model's card, and the integrity check that guards model files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.cli.main import main
from agent.core.errors import ModelIntegrityError
from models.card import DEFAULT_MODEL_DIR, load_card, sha256_file
from models.dataset import stratified_folds, stratified_split
from models.metrics import metrics

ROOT = Path(__file__).resolve().parents[1]


def _held_out_tiles(card: dict, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    names = card["training"]["split"]["held_out_files"]
    x = np.stack([cv2.imread(str(data_dir / n), cv2.IMREAD_GRAYSCALE) for n in names])
    y = np.asarray([0 if n.startswith("damaged/") else 1 for n in names])
    return x, y


def _ir_accuracy(xml: Path, x: np.ndarray, y: np.ndarray, card: dict) -> float:
    """Evaluate an IR with OpenVINO directly (not through skysift's engine or train code)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    scale = np.float32(card["input"]["scale"])
    p = np.asarray(compiled(x.astype(np.float32)[..., None] * scale)[0]).reshape(-1)
    assert p.shape == y.shape and np.all((p >= 0) & (p <= 1))
    return float(((p >= card["threshold"]).astype(int) == y).mean())


# --- pure helpers ---------------------------------------------------------------------------


def test_stratified_split_is_disjoint_proportional_and_seeded():
    y = np.asarray([0] * 84 + [1] * 116)
    tr, te = stratified_split(y, 0.25, seed=3)
    assert set(tr).isdisjoint(te) and len(tr) + len(te) == 200
    assert (y[te] == 0).sum() == 21 and (y[te] == 1).sum() == 29
    again = stratified_split(y, 0.25, seed=3)[1]
    assert np.array_equal(te, again)
    assert not np.array_equal(te, stratified_split(y, 0.25, seed=4)[1])
    folds = stratified_folds(y, 5, seed=3)
    seen = np.concatenate([va for _, va in folds])
    assert sorted(seen) == list(range(200))  # every tile validated exactly once
    for tr_f, va_f in folds:
        assert set(tr_f).isdisjoint(va_f)
        assert 16 <= (y[va_f] == 0).sum() <= 17


def test_metrics_treat_damaged_as_positive():
    # p_undamaged: two damaged tiles (one caught), three undamaged (one false alarm)
    m = metrics(np.asarray([0.1, 0.9, 0.8, 0.2, 0.7]), np.asarray([0, 0, 1, 1, 1]))
    assert m["confusion_matrix"]["matrix"] == [[1, 1], [1, 2]]
    assert m["accuracy"] == 0.6
    assert m["precision_damaged"] == 0.5 and m["recall_damaged"] == 0.5
    low, high = m["accuracy_ci95"]
    assert 0.1 < low < 0.6 < high < 0.95  # 3 of 5 right says little: a wide interval


def test_platt_fit_recovers_a_known_miscalibration():
    from models.calibration import apply_platt, fit_platt, logit, sigmoid

    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < sigmoid(z)).astype(int)  # z is the true log-odds
    over_confident = sigmoid(3 * z - 1)  # what an over-confident, shifted network would say
    a, b = fit_platt(over_confident, y)
    assert a == pytest.approx(1 / 3, abs=0.05) and b == pytest.approx(1 / 3, abs=0.1)
    inside = np.abs(3 * z - 1) < 15  # p is clipped to [1e-7, 1 - 1e-7] before the logit
    got = logit(apply_platt(over_confident, a, b))[inside]
    assert np.allclose(got, (3 * z - 1)[inside] * a + b, atol=1e-6)


def test_calibration_lowers_brier_and_ece_of_a_miscalibrated_p():
    from models.calibration import apply_platt, fit_platt, sigmoid
    from models.metrics import brier, ece

    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, 3000)
    y = (rng.random(3000) < sigmoid(z)).astype(int)
    p = sigmoid(4 * z)
    q = apply_platt(p, *fit_platt(p, y))
    assert brier(q, y) < brier(p, y) and ece(q, y) < ece(p, y) / 2
    assert ece(np.full(10, 0.7), np.array([1] * 7 + [0] * 3)) == pytest.approx(0.0)
    assert brier(np.array([1.0, 0.0]), np.array([0, 0])) == pytest.approx(0.5)


def test_threshold_maximises_balanced_accuracy_in_the_middle_of_the_gap():
    from models.calibration import choose_threshold, logit, sigmoid

    # undamaged (1) from p 0.3 up, damaged (0) below 0.2: any cut in between is perfect,
    # 0.5 is not (it calls the 0.3 and 0.4 undamaged tiles damaged)
    p = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.8, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    t = choose_threshold(p, y)
    assert 0.2 < t < 0.3
    assert t == pytest.approx(float(sigmoid((logit(0.2) + logit(0.3)) / 2)), abs=1e-4)


def test_calibration_folds_into_the_output_layer():
    from models.architecture import build_model
    from models.calibration import apply_platt, fold_into_model
    from models.train import keras_predict

    model = build_model("cnn2020-bn")
    x = np.random.default_rng(2).integers(0, 255, (4, 128, 128), dtype=np.uint8)
    before = keras_predict(model, x)
    fold_into_model(model, 0.5, -0.3)
    assert np.allclose(keras_predict(model, x), apply_platt(before, 0.5, -0.3), atol=1e-5)


# --- end-to-end training ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def subset(tmp_path_factory, aerial_tiles) -> Path:
    """12 + 12 real tiles, linked (not copied) into a damaged/undamaged tree."""
    root = tmp_path_factory.mktemp("subset")
    for cls in ("damaged", "undamaged"):
        (root / cls).mkdir()
        for p in aerial_tiles[cls][:12]:
            (root / cls / p.name).symlink_to(p)
    return root


def _train(data: Path, out: Path, seed: int, *extra: str) -> subprocess.CompletedProcess:
    # A subprocess: training enables TensorFlow's global op determinism, which must not leak
    # into other tests running in this interpreter.
    return subprocess.run(
        [sys.executable, "-m", "agent", "model", "train", "--data", str(data), "--out", str(out),
         "--seed", str(seed), "--epochs", "2", "--test-frac", "0.25", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, subset) -> Path:
    out = tmp_path_factory.mktemp("trained") / "model"
    r = _train(subset, out, seed=5)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "held-out accuracy" in r.stdout
    return out


def test_train_writes_a_verifiable_card(trained, subset):
    card = load_card(trained)
    card.verify_all()
    d = card.data
    assert set(d["files"]) >= {"keras", "openvino"}
    for kind in d["files"]:
        assert card.path_for(kind).exists()
    assert d["input"] == {"height": 128, "width": 128, "channels": 1, "layout": "NHWC",
                          "dtype": "float32", "scale": 1 / 255}
    assert d["output"]["meaning"] == "p_undamaged" and d["threshold"] == 0.5
    data = d["training"]["data"]
    assert data["counts"] == {"damaged": 12, "undamaged": 12}
    split = d["training"]["split"]
    assert split["train"] == 18 and split["held_out"] == 6 and split["seed"] == 5
    held = d["metrics"]["held_out"]
    assert held["n"] == 6 and sum(map(sum, held["confusion_matrix"]["matrix"])) == 6
    assert set(d["versions"]) >= {"tensorflow", "keras", "openvino", "numpy"}
    assert (trained / "MODEL_CARD.md").read_text().startswith("# skysift-damage-cnn")
    # the card's held-out accuracy is what the IR really scores on those tiles
    x, y = _held_out_tiles(d, subset)
    assert _ir_accuracy(card.path_for("openvino"), x, y, d) == pytest.approx(held["accuracy"], abs=1e-6)


def test_training_is_deterministic_for_a_seed(trained, subset, tmp_path):
    again = tmp_path / "again"
    r = _train(subset, again, 5, "--no-int8")
    assert r.returncode == 0, r.stderr[-3000:]
    # same seed and data -> bit-identical weights (the IR .bin holds them all)
    assert sha256_file(again / "model.bin") == sha256_file(trained / "model.bin")
    first, second = load_card(trained).data, load_card(again).data
    assert second["metrics"]["held_out"] == first["metrics"]["held_out"]
    assert second["training"]["split"] == first["training"]["split"]


# --- integrity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("victim", ["model.bin", "model.xml", "model.keras"])
def test_a_flipped_byte_is_refused(tmp_path, victim, capsys):
    copy = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL_DIR, copy)
    path = copy / victim
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    card = load_card(copy)
    kind = "keras" if victim == "model.keras" else "openvino"
    with pytest.raises(ModelIntegrityError, match="does not match the model card"):
        card.path_for(kind)
    assert main(["model", "info", str(copy)]) == 1
    assert victim in capsys.readouterr().err


# --- the shipped model -------------------------------------------------------------------------


def test_shipped_model_verifies_and_its_card_tells_the_truth(shared_data, capsys):
    card = load_card()
    card.verify_all()
    d = card.data
    assert d["training"]["data"]["counts"] == {"damaged": 84, "undamaged": 116}
    held = d["metrics"]["held_out"]
    assert held["accuracy"] >= 0.9, "the shipped model misses the 90 % goal"
    x, y = _held_out_tiles(d, shared_data / "aerial-damage")
    assert len(y) == held["n"]
    assert _ir_accuracy(card.path_for("openvino"), x, y, d) == pytest.approx(held["accuracy"], abs=1e-6)
    if card.has("openvino_int8"):
        i8 = d["metrics"]["int8"]["held_out"]
        assert _ir_accuracy(card.path_for("openvino_int8"), x, y, d) == pytest.approx(i8["accuracy"], abs=1e-6)
        assert i8["accuracy"] >= held["accuracy"] - d["metrics"]["int8"]["tolerance"]
    # the IR stays about the size of the 2020 one (~250 KB)
    assert (card.dir / "model.bin").stat().st_size < 600_000
    assert main(["model", "info"]) == 0
    assert "verified" in capsys.readouterr().out
    assert main(["model", "info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sha256"] == d["sha256"]
