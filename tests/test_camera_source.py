"""The OpenCV camera source: a real video file written here, and a fake capture (a camera
cannot exist in CI) behind the same VideoCapture interface for the lost-stream path."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.core.config import parse_config
from drivers.base import SourceError
from drivers.camera import CameraSource, parse_camera_spec


def write_video(path: Path, tiles: list[Path], fps: float = 10.0, size: int = 128) -> int:
    """An MJPG AVI made of the shared aerial tiles, one tile per frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size, size))
    assert writer.isOpened()
    for t in tiles:
        gray = cv2.imread(str(t), cv2.IMREAD_GRAYSCALE)
        writer.write(cv2.cvtColor(cv2.resize(gray, (size, size)), cv2.COLOR_GRAY2BGR))
    writer.release()
    return len(tiles)


@pytest.fixture
def video(tmp_path: Path, aerial_tiles) -> Path:
    path = tmp_path / "flight.avi"
    write_video(path, aerial_tiles["damaged"][:10] + aerial_tiles["undamaged"][:10])
    return path


def test_spec_parsing() -> None:
    assert parse_camera_spec(0) == ("device", 0)
    assert parse_camera_spec("2") == ("device", 2)
    assert parse_camera_spec("rtsp://10.0.0.2:8554/cam") == ("stream", "rtsp://10.0.0.2:8554/cam")
    assert parse_camera_spec("http://cam.local/mjpg") == ("stream", "http://cam.local/mjpg")
    assert parse_camera_spec("/data/flight.mp4") == ("file", "/data/flight.mp4")


def test_video_file_every_frame_until_eof(video: Path) -> None:
    src = CameraSource(str(video))
    src.open()
    frames = list(src.frames(threading.Event(), once=True))
    src.close()
    assert len(frames) == 20
    assert {f.flight_id for f in frames} == {src.flight_id}
    assert src.flight_id.startswith("cam-")
    for f in frames:
        assert f.data is not None and f.data[:2] == b"\xff\xd8"  # a JPEG to save and classify
        img = cv2.imdecode(np.frombuffer(f.data, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (128, 128, 3)
        assert f.captured_at is not None and f.captured_at.endswith("Z")
    # Video time, not wall time: 10 fps means 0.1 s between frames.
    assert [f.meta["frame_index"] for f in frames] == list(range(20))


def test_sampling_every_n_and_max_fps(video: Path) -> None:
    src = CameraSource(str(video), every_n=3)
    src.open()
    assert [f.meta["frame_index"] for f in src.frames(threading.Event(), once=True)] == list(range(0, 20, 3))
    src = CameraSource(str(video), max_fps=2.0)  # the video is 10 fps: one frame in five
    src.open()
    assert [f.meta["frame_index"] for f in src.frames(threading.Event(), once=True)] == [0, 5, 10, 15]


def test_missing_video_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        CameraSource(str(tmp_path / "none.avi")).open()
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video")
    with pytest.raises(SourceError, match="cannot open"):
        CameraSource(str(bad)).open()


class FakeCapture:
    """A cv2.VideoCapture stand-in for a live stream that delivers ``n`` frames, then dies."""

    def __init__(self, n: int, opened: bool = True, start: int = 0):
        self.n, self.opened, self.i, self.start = n, opened, 0, start

    def isOpened(self) -> bool:  # noqa: N802 - the cv2 name
        return self.opened

    def read(self):
        if not self.opened or self.i >= self.n:
            return False, None
        self.i += 1
        img = np.full((64, 64, 3), (self.start + self.i) % 256, np.uint8)
        return True, img

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        self.opened = False


def test_lost_stream_reopens_with_backoff() -> None:
    # First connection: 3 frames then the link drops; the next attempt fails; then 4 more frames.
    captures = iter([FakeCapture(3, start=0), FakeCapture(0, opened=False), FakeCapture(4, start=100)])
    opened: list[object] = []

    def factory(value):
        opened.append(value)
        return next(captures, FakeCapture(0, opened=False))

    src = CameraSource("rtsp://127.0.0.1:1/cam", reopen_max_s=0.05, capture_factory=factory)
    src.open()
    stop = threading.Event()
    got = []
    for f in src.frames(stop):
        got.append(f)
        if len(got) == 7:
            stop.set()
    assert len(got) == 7
    assert src.reopens >= 2 and len(opened) >= 3
    assert all(f.source == "rtsp://127.0.0.1:1/cam" for f in got)
    assert len({f.data for f in got}) == 7  # every frame is a distinct capture


def test_camera_not_up_at_start_is_waited_for() -> None:
    captures = iter([FakeCapture(0, opened=False), FakeCapture(2)])
    src = CameraSource(0, reopen_max_s=0.05, capture_factory=lambda v: next(captures, FakeCapture(0, opened=False)))
    src.open()  # no error: a live camera may come up after the agent
    stop = threading.Event()
    got = []
    for f in src.frames(stop):
        got.append(f)
        if len(got) == 2:
            stop.set()
    assert len(got) == 2


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from agent.core.config import ModelConfig
    from models.factory import create_frame_classifier

    clf = create_frame_classifier(ModelConfig(devices=["CPU"]), tmp_path_factory.mktemp("ov-cache"))
    yield clf
    clf.close()


def test_camera_run_saves_jpegs_as_one_flight(tmp_path: Path, video: Path, classifier) -> None:
    from agent.service.agent import Agent
    from agent.store.db import Store

    cfg = parse_config(
        {
            "source": {"camera": str(video), "camera_every_n": 2},
            "storage": {"dir": str(tmp_path / "data"), "min_free_mb": 0},
        }
    )
    agent = Agent(cfg, classifier=classifier)
    assert agent.run(once=True) == 0
    store = Store(cfg.db_path)
    flights = store.flights()
    rows = store.frames()
    store.close()
    assert len(flights) == 1 and flights[0]["flight_id"].startswith("cam-")
    assert flights[0]["ended_at"] is not None and flights[0]["frames"] == 10
    assert flights[0]["source"] == str(video)
    assert len(rows) == 10 and all(r["status"] == "classified" for r in rows)
    for r in rows:
        p = Path(r["image_path"])
        assert p == cfg.storage.dir / "frames" / flights[0]["flight_id"] / f"{r['frame_id']}.jpg"
        assert p.is_file() and r["sha256"].startswith(r["frame_id"])
        assert r["source"] == str(video)
    # The first half of the video is damaged tiles, the second undamaged: the model sees that.
    labels = [r["label"] for r in rows]
    assert labels[:5].count("damaged") >= 4 and labels[5:].count("undamaged") >= 4


class SlowClassifier:
    """The real classifier, slowed down: a pipeline that cannot keep up with the camera."""

    def __init__(self, inner, delay: float):
        self.inner, self.delay = inner, delay

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def classify(self, images):
        time.sleep(self.delay)
        return self.inner.classify(images)

    def submit(self, images):  # the pipeline's way in
        time.sleep(self.delay)
        return self.inner.submit(images)

    def close(self) -> None:
        pass


def test_live_camera_drops_and_counts_when_the_pipeline_is_full(tmp_path: Path, classifier) -> None:
    n = 40
    caps = iter([FakeCapture(n, start=7)])
    src = CameraSource(0, reopen_max_s=0.05, capture_factory=lambda v: next(caps, FakeCapture(0, opened=False)))
    cfg = parse_config(
        {"source": {"camera": 0, "queue_size": 1}, "storage": {"dir": str(tmp_path / "data"), "min_free_mb": 0}}
    )
    from agent.service.agent import Agent
    from agent.store.db import Store

    agent = Agent(cfg, source=src, classifier=SlowClassifier(classifier, 0.2))
    t = threading.Thread(target=agent.run, kwargs={"once": False}, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and src.reopens == 0:
        time.sleep(0.05)  # the fake stream has delivered all its frames and died
    time.sleep(0.5)
    agent.stop()
    t.join(timeout=20)
    assert not t.is_alive()
    store = Store(cfg.db_path)
    committed = store.count_frames()
    store.close()
    assert agent.ctx.stats.frames_dropped > 0
    assert src.dropped == agent.ctx.stats.frames_dropped
    assert committed + agent.ctx.stats.frames_dropped == n


def test_lost_stream_logs_one_down_line_and_one_recovered_line(caplog) -> None:
    # The camera's reconnects go through the agent's one Backoff: a drop followed by several
    # failed reopens is one "link down" line, not one line per attempt, then one "recovered".
    captures = iter([FakeCapture(2, start=0)] + [FakeCapture(0, opened=False)] * 5 + [FakeCapture(1, start=50)])
    src = CameraSource(
        "rtsp://127.0.0.1:1/cam", reopen_max_s=0.01,
        capture_factory=lambda v: next(captures, FakeCapture(0, opened=False)),
    )
    src.open()
    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="agent.core.backoff"):
        got = []
        for f in src.frames(stop):
            got.append(f)
            if len(got) == 3:
                stop.set()
    assert src.reopens == 6  # the drop and five failed reopens
    msgs = [r.getMessage() for r in caplog.records if r.name == "agent.core.backoff"]
    assert len(msgs) == 2, msgs
    assert msgs[0].startswith("camera rtsp://127.0.0.1:1/cam: link down")
    assert "recovered after 6 failed attempts" in msgs[1]


def test_backoff_wait_returns_false_when_stopped() -> None:
    from agent.core.backoff import Backoff

    b = Backoff("t", base_s=30.0, cap_s=30.0)
    assert b.wait(threading.Event())  # no failure yet: no wait at all
    b.failure("boom")
    b.next_at = time.monotonic() + 30  # the worst case of the jitter
    stop = threading.Event()
    threading.Timer(0.05, stop.set).start()
    t0 = time.monotonic()
    assert b.wait(stop) is False
    assert time.monotonic() - t0 < 5


SECRET_URL = "rtsp://admin:s3cret@127.0.0.1:1/cam"
SHOWN_URL = "rtsp://admin:***@127.0.0.1:1/cam"


def test_stream_password_is_in_no_log_record_and_no_stored_row(tmp_path: Path, classifier, caplog) -> None:
    # A live stream with a password in its URL, through the whole agent: it drops once, fails
    # a reopen, comes back. The capture is opened with the secret; nothing logged or stored
    # (rows, state.json, the SQLite files) holds it.
    from agent.service.agent import Agent
    from agent.store.db import Store

    opened: list[object] = []
    caps = iter([FakeCapture(3, start=10), FakeCapture(0, opened=False), FakeCapture(2, start=90)])

    def factory(value):
        opened.append(value)
        return next(caps, FakeCapture(0, opened=False))

    src = CameraSource(SECRET_URL, reopen_max_s=0.05, capture_factory=factory)
    cfg = parse_config(
        {"source": {"camera": SECRET_URL}, "storage": {"dir": str(tmp_path / "data"), "min_free_mb": 0}}
    )
    agent = Agent(cfg, source=src, classifier=classifier)
    caplog.set_level(logging.DEBUG)
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and src.reopens < 3:
        time.sleep(0.05)  # all three captures have been used up
    time.sleep(0.5)
    agent.stop()
    t.join(timeout=30)
    assert not t.is_alive()
    assert len(opened) >= 3 and set(opened) == {SECRET_URL}  # the stream still gets its password
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "s3cret" in m] == []
    assert "s3cret" not in caplog.text  # formatted tracebacks included
    assert any(m.startswith("skysift running: camera " + SHOWN_URL) for m in messages), messages
    assert any(m.startswith(f"camera {SHOWN_URL}: link down") for m in messages), messages
    store = Store(cfg.db_path)
    rows, flights = store.frames(), store.flights()
    store.close()
    assert rows and {r["source"] for r in rows} == {SHOWN_URL}
    assert [f["source"] for f in flights] == [SHOWN_URL]
    for path in cfg.storage.dir.rglob("*"):
        if path.is_file():
            assert b"s3cret" not in path.read_bytes(), path
