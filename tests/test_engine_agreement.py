"""Every engine and precision gives the same answer: OpenVINO auto, f32 and INT8 and TensorFlow
return the same label (at the card's threshold) and p(damaged) within 0.02 on tiles that neither
training nor the quantizer's calibration saw, the held-out split and perturbed copies of it. The
report's heat map and the frame decision use the same threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.card import load_card
from models.dataset import load_dataset, probe_tiles, stratified_split

MAX_ABS_DP = 0.02


@pytest.fixture(scope="module")
def card():
    return load_card()  # the shipped model


@pytest.fixture(scope="module")
def unseen(card, shared_data: Path) -> dict[str, np.ndarray]:
    """The card's held-out split, rebuilt from the shared data with the card's seed, and the
    perturbed probe set generated from it."""
    split = card.data["training"]["split"]
    ds = load_dataset(shared_data / "aerial-damage")
    _, test_idx = stratified_split(ds.y, split["test_frac"], split["seed"])
    assert [ds.names[i] for i in test_idx] == split["held_out_files"]
    held_out = ds.x[test_idx]
    return {"held_out": held_out, "probe": probe_tiles(held_out, split["seed"])}


@pytest.fixture(scope="module")
def predictions(card, unseen) -> dict[str, dict[str, np.ndarray]]:
    from models.openvino_engine import OpenVinoClassifier
    from models.tensorflow_engine import TensorFlowClassifier

    engines = {
        "openvino/auto": OpenVinoClassifier(card, "CPU", "auto"),
        "openvino/f32": OpenVinoClassifier(card, "CPU", "f32"),
        "openvino/int8": OpenVinoClassifier(card, "CPU", "int8"),
        "tensorflow": TensorFlowClassifier(card),
    }
    assert engines["openvino/auto"].precision == "int8", "auto must run the INT8 IR the card verified"
    out = {name: {s: e.predict(x) for s, x in unseen.items()} for name, e in engines.items()}
    for e in engines.values():
        e.close()
    return out


def test_probe_set_is_deterministic_and_perturbed(unseen, card):
    again = probe_tiles(unseen["held_out"], card.data["training"]["split"]["seed"])
    assert np.array_equal(again, unseen["probe"])
    assert len(unseen["probe"]) == 4 * len(unseen["held_out"])
    assert not np.array_equal(unseen["probe"][::4], unseen["held_out"])


@pytest.mark.parametrize("subset", ["held_out", "probe"])
@pytest.mark.parametrize("engine", ["openvino/auto", "openvino/f32", "openvino/int8"])
def test_every_engine_and_precision_agrees_with_tensorflow(card, predictions, engine, subset):
    ref, p = predictions["tensorflow"][subset], predictions[engine][subset]
    dp = np.abs(p - ref)
    assert dp.max() <= MAX_ABS_DP, (engine, subset, float(dp.max()))
    assert np.array_equal(card.is_damaged(p), card.is_damaged(ref)), (engine, subset)


def test_the_card_records_the_agreement_the_engines_show(card, predictions):
    agree = card.data["metrics"]["int8"]["agreement"]
    assert card.int8_verified and agree["reproduces_float"]
    assert agree["n"] == sum(len(v) for v in predictions["openvino/f32"].values())
    dp = max(np.abs(predictions["openvino/int8"][s] - predictions["openvino/f32"][s]).max()
             for s in ("held_out", "probe"))
    assert dp <= agree["max_abs_dp"] + 0.005  # the card measured IR-in-f32, the engine may differ


def test_held_out_accuracy_at_the_card_threshold_is_the_cards(card, predictions, unseen):
    y = np.asarray([0 if n.startswith("damaged/") else 1
                    for n in card.data["training"]["split"]["held_out_files"]])
    for name, p in predictions.items():
        correct = card.is_damaged(p["held_out"]) == (y == 0)
        assert correct.mean() == pytest.approx(card.data["metrics"]["held_out"]["accuracy"], abs=1e-6), name


def test_report_heat_map_uses_the_card_threshold(card, predictions):
    from agent.report.geo import damaged_tile_boxes, tile_threshold

    assert tile_threshold() == pytest.approx(card.p_damaged_threshold)
    p = predictions["openvino/f32"]["held_out"]
    row = {"width": 128 * len(p), "height": 128, "tile_px": 128, "tile_grid": [[float(v) for v in p]]}
    drawn = {c for _, c, _, _ in damaged_tile_boxes(row)}
    assert drawn == set(np.flatnonzero(card.is_damaged(p)).tolist())
