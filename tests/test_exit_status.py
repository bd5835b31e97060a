"""The exit status survives the OpenVINO engine's threads: no abort while the interpreter exits.

An OpenVINO thread that asks for the GIL once the interpreter is finalizing (to run a request's
callback, or to free the callback) is ended by CPython with ``pthread_exit``; the unwinding
through OpenVINO's ``noexcept`` frames aborts the process: ``terminate called without an active
exception``, exit 134 instead of the documented status. Each case runs in a fresh interpreter,
a few times, since the abort is a race: on the engine without a deterministic teardown the
first case aborted in 8 runs of 8, the second in about 4 of 10.
``tests/many_runs_exit.py`` runs the whole ``skysift classify`` many times under CPU load.
"""

from __future__ import annotations

import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

_SETUP = """
import sys
from agent.core.config import ModelConfig
from agent.imaging.decode import read_image_file
from models.factory import create_frame_classifier

cfg = ModelConfig(devices=["CPU"])
fc = create_frame_classifier(cfg, None)
kw = {"tile_px": cfg.tile_px, "input_px": fc.input_px, "max_pixels": cfg.max_pixels}
images = [read_image_file(p, max_file_bytes=1 << 30, **kw) for p in sys.argv[1:]]
"""

#: requests still in flight when the program ends (an error between submit and collect):
#: their callbacks run while the interpreter exits, unless the engine is closed at exit
IN_FLIGHT_AT_EXIT = _SETUP + """
pending = fc.submit(images)
assert pending.wait is not None
"""

#: what ``skysift classify`` does: classify, close, exit; the last callback's thread may still
#: be in Python (or still hold the callback) when the waiter has its results
CLASSIFY_CLOSE_EXIT = _SETUP + """
results = fc.classify(images)
assert len(results) == len(images)
fc.close()
"""


def _run(script: str, images: list[Path]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, images)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )


@pytest.fixture(scope="module")
def card():
    from models.card import load_card

    return load_card()


@pytest.fixture(scope="module")
def images(exif_samples: Path) -> list[Path]:
    # 9 frames of 640x480: 180 tiles, 12 batches of 16 on the engine's AsyncInferQueue
    paths = sorted((exif_samples / "gps").glob("*.jpg"))
    assert len(paths) == 9
    return paths


@pytest.mark.parametrize(
    ("script", "runs"), [(IN_FLIGHT_AT_EXIT, 3), (CLASSIFY_CLOSE_EXIT, 8)], ids=["in-flight", "closed"]
)
def test_interpreter_exit_does_not_abort(script: str, runs: int, images: list[Path]):
    for i in range(runs):
        proc = _run(script, images)
        assert "terminate called" not in proc.stderr, f"run {i + 1}: {proc.stderr[-2000:]}"
        assert proc.returncode == 0, f"run {i + 1}: exit {proc.returncode}: {proc.stderr[-2000:]}"


def test_close_returns_once_openvino_has_let_go(card):
    """When close() returns, no OpenVINO thread still holds the queue's callback (a bound
    method, so the engine): its release, which takes the GIL, is not left to a worker that
    may get there while the interpreter exits. Without the wait, 2 to 9 engines of 20 were
    still held. close() twice is harmless."""
    from models.openvino_engine import OpenVinoClassifier

    held = 0
    for _ in range(20):
        clf = OpenVinoClassifier(card, "CPU")
        tiles = np.zeros((40, clf.input_px, clf.input_px), np.uint8)
        out = clf.predict_async([tiles[:16], tiles[16:32], tiles[32:]])
        assert [len(o) for o in out] == [16, 16, 8]
        ref = weakref.ref(clf)
        clf.close()
        clf.close()
        del clf
        held += ref() is not None
    assert held == 0
