"""One contract suite for the FrameSource interface, run over every backend."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from drivers.base import Frame, FrameSource
from drivers.camera import CameraSource
from drivers.folder import FolderSource


def _folder(tmp_path: Path, tiles: list[Path]) -> FrameSource:
    root = tmp_path / "in"
    (root / "f1").mkdir(parents=True)
    for i, t in enumerate(tiles[:6]):
        shutil.copy(t, (root / "f1" if i % 2 else root) / t.name)
    return FolderSource(root, settle_seconds=0)


def _camera(tmp_path: Path, tiles: list[Path]) -> FrameSource:
    import cv2

    path = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 128))
    for t in tiles[:6]:
        writer.write(cv2.imread(str(t), cv2.IMREAD_COLOR))
    writer.release()
    return CameraSource(str(path))


BACKENDS: dict[str, Callable[[Path, list[Path]], FrameSource]] = {"folder": _folder, "camera": _camera}


@pytest.fixture(params=sorted(BACKENDS))
def source(request, tmp_path: Path, aerial_tiles) -> FrameSource:
    src = BACKENDS[request.param](tmp_path, aerial_tiles["damaged"])
    yield src
    src.close()


def test_once_yields_every_frame_then_returns(source: FrameSource) -> None:
    source.open()
    frames = list(source.frames(threading.Event(), once=True))
    assert len(frames) == 6
    for f in frames:
        assert isinstance(f, Frame)
        assert f.flight_id and isinstance(f.source, str) and f.source
        assert f.data is not None or (f.path is not None and f.path.is_file())
        assert f.flight_id in source.flights()


def test_stop_ends_iteration(source: FrameSource) -> None:
    source.open()
    stop = threading.Event()
    got = []
    for f in source.frames(stop, once=True):
        got.append(f)
        stop.set()
    assert len(got) == 1


def test_lossiness_is_declared_and_close_is_idempotent(source: FrameSource) -> None:
    assert source.lossy is (source.kind == "camera")  # a folder never drops: it is rescanned
    source.open()
    source.close()
    source.close()
    assert source.dropped == 0
