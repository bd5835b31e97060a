"""The pipeline end to end with the real classifier and shipped model: bad input, duplicates,
flights, events, files still being written, and a full disk (a real, tiny tmpfs)."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agent.core.config import parse_config
from agent.service.agent import Agent
from agent.store.db import Store


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from agent.core.config import ModelConfig
    from models.factory import create_frame_classifier

    clf = create_frame_classifier(ModelConfig(devices=["CPU"]), tmp_path_factory.mktemp("ov-cache"))
    yield clf
    clf.close()


class Counting:
    """The real classifier, counting the frames it is asked to classify."""

    def __init__(self, inner):
        self.inner = inner
        self.frames = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def classify(self, images):
        self.frames += len(images)
        return self.inner.classify(images)

    def submit(self, images):  # the pipeline's way in: submit, then collect
        self.frames += len(images)
        return self.inner.submit(images)

    def close(self) -> None:
        pass


def make_cfg(tmp_path: Path, inbox: Path, **over) -> object:
    data = {
        "source": {"folder": str(inbox), "settle_seconds": 0.3, "rescan_seconds": 0.5},
        "storage": {"dir": str(tmp_path / "data"), "min_free_mb": 0},
    }
    for key, value in over.items():
        data.setdefault(key, {}).update(value)
    return parse_config(data)


def rows_by_name(cfg) -> dict[str, dict]:
    store = Store(cfg.db_path, readonly=True)
    try:
        return {Path(r["source"]).name: r for r in store.frames()}
    finally:
        store.close()


def test_every_broken_file_is_rejected_with_a_reason(tmp_path: Path, exif_samples: Path, classifier) -> None:
    inbox = tmp_path / "inbox"
    shutil.copytree(exif_samples, inbox / "samples")
    bad = inbox / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.txt").write_text("not an image at all\n")
    whole = (exif_samples / "gps" / "DSCN0010.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (bad / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(3_000_000))  # > max_file_mb
    # A decompression bomb: a valid PNG header claiming 100000 x 100000 pixels.
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    (bad / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )
    # ignore_extensions []: notes.txt must reach the decoder (.txt is ignored by default)
    cfg = make_cfg(tmp_path, inbox, model={"max_file_mb": 2.5}, source={"ignore_extensions": []})
    agent = Agent(cfg, classifier=classifier)
    assert agent.run(once=True) == 0
    rows = rows_by_name(cfg)
    expected_rejects = {
        "corrupted.jpg": {"corrupt", "truncated"},
        "empty.jpg": {"empty"},
        "notes.txt": {"not_image"},
        "truncated.jpg": {"truncated", "corrupt"},
        "huge.png": {"file_too_large"},
        "bomb.png": {"too_large"},
    }
    for name, reasons in expected_rejects.items():
        assert rows[name]["status"] == "rejected", name
        assert rows[name]["reason"] in reasons, (name, rows[name]["reason"])
        assert rows[name]["label"] is None
    good = [p.name for p in exif_samples.rglob("*.jpg") if p.name != "corrupted.jpg"]
    assert len(good) == 23
    for name in good:  # broken EXIF (invalid/) must not cost the pixels
        r = rows[name]
        assert r["status"] == "classified", (name, r["reason"])
        assert r["label"] in ("damaged", "undamaged") and 0.0 <= r["p_damaged"] <= 1.0
        assert r["tiles"] >= 1 and len(r["tile_grid"]) * len(r["tile_grid"][0]) == r["tiles"]
        assert r["engine"] == classifier.engine and r["run_id"] == agent.ctx.run_id
        assert r["frame_id"] == r["sha256"][:32]
    assert len(rows) == len(good) + len(expected_rejects)
    store = Store(cfg.db_path, readonly=True)
    run = store.db.execute("SELECT * FROM runs").fetchone()
    flights = {f["flight_id"]: f for f in store.flights()}
    store.close()
    assert run["cores"] >= 1 and run["memory_mb"] > 0 and run["engine"] == classifier.engine
    assert run["model_sha256"] == classifier.model_sha256 and run["ended_at"] is not None
    assert '"openvino"' in run["versions"] and '"numpy"' in run["versions"]
    assert flights["bad"]["rejected"] == 5 and flights["samples"]["rejected"] == 1


def test_duplicates_are_classified_once(tmp_path: Path, aerial_tiles, classifier) -> None:
    inbox = tmp_path / "inbox"
    for sub in ("f1", "f2"):
        (inbox / sub).mkdir(parents=True)
    tiles = aerial_tiles["damaged"][:5]
    for t in tiles:
        shutil.copy(t, inbox / "f1" / t.name)
        shutil.copy(t, inbox / "f2" / ("copy-" + t.name))  # same content, other flight, other name
    shutil.copy(tiles[0], inbox / "f1" / "again.png")
    cfg = make_cfg(tmp_path, inbox)
    counting = Counting(classifier)
    assert Agent(cfg, classifier=counting).run(once=True) == 0
    assert counting.frames == 5
    store = Store(cfg.db_path, readonly=True)
    assert store.count_frames() == 5
    store.close()
    # A restart (new process state, same database) classifies nothing again.
    counting2 = Counting(classifier)
    agent = Agent(cfg, classifier=counting2)
    assert agent.run(once=True) == 0
    assert counting2.frames == 0 and agent.pipeline.duplicates == 11
    # Every file version is recorded, so the restart did not even read the files again.
    assert agent.pipeline.timings["read"] == 0.0
    store = Store(cfg.db_path, readonly=True)
    assert store.count_frames() == 5
    assert store.db.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 11
    store.close()
    # A file rewritten with new content is a new version: read, classified, recorded.
    shutil.copy(aerial_tiles["undamaged"][0], inbox / "f1" / "again.png")
    os.utime(inbox / "f1" / "again.png", ns=(time.time_ns(), time.time_ns() - 10**10))
    counting3 = Counting(classifier)
    assert Agent(cfg, classifier=counting3).run(once=True) == 0
    assert counting3.frames == 1
    store = Store(cfg.db_path, readonly=True)
    assert store.count_frames() == 6
    store.close()


def test_events_and_flight_commands(tmp_path: Path, aerial_tiles, classifier) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "mission-1").mkdir(parents=True)
    cfg = make_cfg(tmp_path, inbox, source={"settle_seconds": 0.1, "rescan_seconds": 0.3})
    agent = Agent(cfg, classifier=classifier)
    events: list[tuple[str, dict]] = []
    for name in ("frames_committed", "flight_started", "flight_ended", "progress"):
        agent.ctx.bus.subscribe(name, lambda _n=name, **kw: events.append((_n, kw)))
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    tiles = aerial_tiles["damaged"]
    try:
        assert _wait(lambda: agent.pipeline is not None and "flight_start" in agent.ctx.commands)
        shutil.copy(tiles[0], inbox / "mission-1" / "a.png")
        assert _wait(lambda: agent.ctx.stats.frames_committed == 1)
        fid = agent.ctx.command("flight_start", name="Sortie 7")
        assert fid == "Sortie_7"
        shutil.copy(tiles[1], inbox / "root.png")  # root-level files go to the commanded flight
        shutil.copy(tiles[2], inbox / "mission-1" / "b.png")  # subfolders keep their own
        assert _wait(lambda: agent.ctx.stats.frames_committed == 3)
        assert agent.ctx.command("flight_end") == "Sortie_7"
        assert agent.ctx.command("flight_end") is None
    finally:
        agent.stop()
        t.join(timeout=20)
    assert not t.is_alive()
    rows = rows_by_name(cfg)
    assert rows["root.png"]["flight_id"] == "Sortie_7"
    assert rows["a.png"]["flight_id"] == rows["b.png"]["flight_id"] == "mission-1"
    committed = [r for n, kw in events if n == "frames_committed" for r in kw["rows"]]
    assert sorted(Path(r["source"]).name for r in committed) == ["a.png", "b.png", "root.png"]
    assert all(r["status"] == "classified" and isinstance(r["tile_grid"], list) for r in committed)
    started = [kw["flight_id"] for n, kw in events if n == "flight_started"]
    ended = [kw["flight_id"] for n, kw in events if n == "flight_ended"]
    assert sorted(started) == ["Sortie_7", "mission-1"] and sorted(ended) == ["Sortie_7", "mission-1"]
    assert ended.index("Sortie_7") == 0  # ended by command, before the agent stopped
    assert [kw["count"] for n, kw in events if n == "progress"][-1] == 3
    store = Store(cfg.db_path, readonly=True)
    sortie = store.flight("Sortie_7")
    store.close()
    assert sortie["name"] == "Sortie 7" and sortie["ended_at"] and sortie["frames"] == 1


def test_file_still_being_written_is_waited_for(tmp_path: Path, exif_samples: Path, classifier) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    data = (exif_samples / "gps" / "DSCN0012.jpg").read_bytes()
    target = inbox / "slow.jpg"
    started = threading.Event()

    def writer() -> None:
        with open(target, "wb") as f:
            step = len(data) // 10
            for i in range(0, len(data), step):
                f.write(data[i : i + step])
                f.flush()
                started.set()
                time.sleep(0.15)

    w = threading.Thread(target=writer)
    w.start()
    started.wait(5)
    cfg = make_cfg(tmp_path, inbox, source={"settle_seconds": 0.5})
    assert Agent(cfg, classifier=classifier).run(once=True) == 0
    w.join()
    r = rows_by_name(cfg)["slow.jpg"]
    assert r["status"] == "classified" and r["geo_source"] == "exif"
    assert r["bytes"] == len(data)


# --- disk full ------------------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A real 6 MB tmpfs for storage.dir (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave_bytes: int = 0) -> Path:
    filler = mnt / "filler"
    free = shutil.disk_usage(mnt).free - leave_bytes
    with open(filler, "wb") as f:
        try:
            while free > 0:
                n = min(free, 1 << 20)
                f.write(b"\0" * n)
                free -= n
            f.flush()
        except OSError:
            pass
    return filler


def _wait(pred, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def _run_bg(agent: Agent) -> tuple[threading.Thread, list[int]]:
    code: list[int] = []
    t = threading.Thread(target=lambda: code.append(agent.run()), daemon=True)
    t.start()
    return t, code


def test_disk_full_pauses_keeps_the_db_and_resumes(tmp_path: Path, tiny_fs: Path, aerial_tiles, classifier) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = make_cfg(tmp_path, inbox, storage={"dir": str(tiny_fs / "data")},
                   source={"settle_seconds": 0.1, "rescan_seconds": 0.3})
    agent = Agent(cfg, classifier=classifier)
    events: list[str] = []
    agent.ctx.bus.subscribe("paused", lambda **kw: events.append("paused"))
    agent.ctx.bus.subscribe("resumed", lambda **kw: events.append("resumed"))
    t, code = _run_bg(agent)
    tiles = aerial_tiles["undamaged"]
    try:
        for p in tiles[:5]:
            shutil.copy(p, inbox)
        assert _wait(lambda: agent.ctx.stats.frames_committed == 5)
        filler = _fill(tiny_fs)  # the disk is now completely full
        for p in tiles[5:40]:
            shutil.copy(p, inbox)
        assert _wait(lambda: "paused" in events)
        assert agent.ctx.stats.paused_reason and "disk full" in agent.ctx.stats.paused_reason
        time.sleep(0.5)
        # The database is intact and still holds exactly the first five frames.
        conn = sqlite3.connect(f"file:{cfg.db_path}?mode=ro", uri=True)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 5
        conn.close()
        filler.unlink()  # space returns
        assert _wait(lambda: agent.ctx.stats.frames_committed == 40, timeout=60)
        assert events == ["paused", "resumed"]
    finally:
        agent.stop()
        t.join(timeout=20)
    assert code == [0]
    store = Store(cfg.db_path, readonly=True)
    assert store.count_frames() == 40 == len({r["frame_id"] for r in store.frames()})
    store.close()


def test_min_free_space_stops_taking_frames_until_space_returns(
    tmp_path: Path, tiny_fs: Path, aerial_tiles, classifier
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = make_cfg(tmp_path, inbox, storage={"dir": str(tiny_fs / "data"), "min_free_mb": 2},
                   source={"settle_seconds": 0.1, "rescan_seconds": 0.3})
    (tiny_fs / "data").mkdir()
    Store(cfg.db_path).close()  # the schema exists before the disk fills
    filler = _fill(tiny_fs, leave_bytes=1 << 20)  # 1 MB left, 2 MB required
    agent = Agent(cfg, classifier=classifier)
    events: list[str] = []
    agent.ctx.bus.subscribe("paused", lambda **kw: events.append("paused:" + kw["reason"]))
    agent.ctx.bus.subscribe("resumed", lambda **kw: events.append("resumed"))
    t, code = _run_bg(agent)
    try:
        for p in aerial_tiles["damaged"][:10]:
            shutil.copy(p, inbox)
        assert _wait(lambda: any(e.startswith("paused:") for e in events))
        assert "MB free" in events[0]
        time.sleep(1.0)
        assert agent.ctx.stats.frames_committed == 0
        filler.unlink()
        assert _wait(lambda: agent.ctx.stats.frames_committed == 10, timeout=60)
        assert events[-1] == "resumed"
    finally:
        agent.stop()
        t.join(timeout=20)
    assert code == [0]


def test_storage_budget_reached_pauses_ingest(tmp_path: Path, aerial_tiles, classifier) -> None:
    """storage.max_gb: the database alone is over a tiny budget and nothing is synced, so
    nothing may be deleted: ingest pauses rather than lose unsynced data."""
    pytest.importorskip("agent.store.retention")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = make_cfg(tmp_path, inbox, storage={"max_gb": 1e-6}, source={"settle_seconds": 0.1})
    agent = Agent(cfg, classifier=classifier)
    reasons: list[str] = []
    agent.ctx.bus.subscribe("paused", lambda **kw: reasons.append(kw["reason"]))
    t, code = _run_bg(agent)
    try:
        for p in aerial_tiles["damaged"][:3]:
            shutil.copy(p, inbox)
        assert _wait(lambda: bool(reasons))
        time.sleep(0.5)
        assert agent.ctx.stats.frames_committed == 0
    finally:
        agent.stop()
        t.join(timeout=20)
    assert code == [0]
    assert "budget" in reasons[0]


# --- stages ---------------------------------------------------------------------------------


def _jobs(cfg, paths: list[Path], classifier) -> list:
    from agent.ingest import Counts, Decoder, Reader
    from drivers.base import Frame

    counts = Counts()
    reader = Reader(cfg.model.max_file_mb, counts)
    decoder = Decoder(cfg.model, classifier.input_px, cfg.geotag.camera_timezone, counts)
    jobs = [reader.read(Frame(flight_id="f", source=str(p), path=p)) for p in paths]
    for job in jobs:
        decoder.decode(job)
    return jobs


def test_row_keys_are_the_frames_table_columns(tmp_path: Path, aerial_tiles, classifier) -> None:
    """One column list: the row builder's keys and a fresh database's frames table agree with it."""
    from agent.ingest import ClassifierStage, Counts, build_row
    from agent.store.columns import FRAME_COLUMNS

    cfg = make_cfg(tmp_path, tmp_path)
    jobs = _jobs(cfg, [aerial_tiles["damaged"][0], tmp_path / "missing.png"], classifier)
    ClassifierStage(classifier, Counts()).classify(jobs)
    rows = [build_row(j, "f", "2026-01-01T00:00:00.000Z", positions=[], run_id=None) for j in jobs]
    assert [r["status"] for r in rows] == ["classified", "rejected"]
    assert all(tuple(r) == FRAME_COLUMNS for r in rows)
    store = Store(tmp_path / "fresh.db")
    table = tuple(c[1] for c in store.db.execute("PRAGMA table_info(frames)"))
    store.close()
    assert table == FRAME_COLUMNS


class FailingBatches:
    """The real classifier, failing every batch of more than one frame and every frame in ``bad``."""

    def __init__(self, inner, bad: set[str]):
        self.inner, self.bad = inner, bad

    @property
    def input_px(self) -> int:
        return self.inner.input_px

    def classify(self, images):
        if len(images) > 1 or images[0].sha256 in self.bad:
            raise RuntimeError("engine failed")
        return self.inner.classify(images)

    def submit(self, images):
        return images

    def collect(self, pending):
        return self.classify(pending)


def test_classifier_stage_retries_one_by_one_and_stops_when_all_fail(
    tmp_path: Path, aerial_tiles, classifier
) -> None:
    from agent.ingest import ClassifierStage, Counts, PipelineError

    cfg = make_cfg(tmp_path, tmp_path)
    jobs = _jobs(cfg, aerial_tiles["undamaged"][:3], classifier)
    stage = ClassifierStage(FailingBatches(classifier, {jobs[1].sha256}), Counts())
    stage.collect(stage.submit(jobs))
    assert [j.result is not None for j in jobs] == [True, False, True]
    assert jobs[1].reject is not None and jobs[1].reject.reason == "inference_error"
    every = _jobs(cfg, aerial_tiles["undamaged"][3:5], classifier)
    stage = ClassifierStage(FailingBatches(classifier, {j.sha256 for j in every}), Counts())
    with pytest.raises(PipelineError, match="fails on every frame"):
        stage.classify(every)


def test_queue_depths_are_published_by_name(tmp_path: Path, aerial_tiles, classifier) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for t in aerial_tiles["damaged"][:3]:
        shutil.copy(t, inbox)
    cfg = make_cfg(tmp_path, inbox)
    agent = Agent(cfg, classifier=classifier)
    assert agent.run(once=True) == 0
    assert agent.ctx.stats.frames_committed == 3
    assert agent.ctx.stats.queue_depths == {"source": 0, "decoded": 0, "classified": 0}


def test_a_folder_flight_ends_when_idle_and_reopens(tmp_path: Path, aerial_tiles, classifier) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "m1").mkdir(parents=True)
    cfg = make_cfg(tmp_path, inbox, source={"settle_seconds": 0.1, "rescan_seconds": 0.3, "flight_idle_s": 1})
    agent = Agent(cfg, classifier=classifier)
    events: list[tuple[str, str]] = []
    for name in ("flight_started", "flight_ended"):
        agent.ctx.bus.subscribe(name, lambda _n=name, **kw: events.append((_n, kw["flight_id"])))
    t, code = _run_bg(agent)
    tiles = aerial_tiles["damaged"]
    try:
        assert _wait(lambda: agent.pipeline is not None)
        shutil.copy(tiles[0], inbox / "m1" / "a.png")
        assert _wait(lambda: ("flight_ended", "m1") in events, timeout=20), events
        store = Store(cfg.db_path, readonly=True)
        assert store.flight("m1")["ended_at"]
        store.close()
        shutil.copy(tiles[1], inbox / "m1" / "b.png")  # files come again: the flight reopens
        assert _wait(lambda: events.count(("flight_started", "m1")) == 2, timeout=20), events
    finally:
        agent.stop()
        t.join(timeout=20)
    assert code == [0]
    store = Store(cfg.db_path, readonly=True)
    assert store.flight("m1")["frames"] == 2
    store.close()


def test_flights_left_open_by_a_dead_run_are_ended_at_start(tmp_path: Path, aerial_tiles, classifier) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "old").mkdir(parents=True)
    shutil.copy(aerial_tiles["damaged"][0], inbox / "old" / "a.png")
    cfg = make_cfg(tmp_path, inbox)
    assert Agent(cfg, classifier=classifier).run(once=True) == 0
    store = Store(cfg.db_path)
    last = store.frames("old")[0]["classified_at"]
    with store.transaction() as db:  # as kill -9 leaves them: never ended
        db.execute("UPDATE flights SET ended_at = NULL")
        db.execute("INSERT INTO flights (flight_id, name, started_at) VALUES ('empty', 'empty', '2026-01-01T00:00:00Z')")
    store.close()
    (inbox / "old" / "a.png").unlink()
    agent = Agent(cfg, classifier=classifier)
    t, code = _run_bg(agent)
    try:
        assert _wait(lambda: agent.pipeline is not None)
        store = Store(cfg.db_path, readonly=True)
        ended = {f["flight_id"]: f["ended_at"] for f in store.flights()}
        store.close()
    finally:
        agent.stop()
        t.join(timeout=20)
    assert ended == {"old": last, "empty": "2026-01-01T00:00:00Z"}


def test_a_fatal_commit_error_exits_nonzero_in_watch_mode(tmp_path: Path, aerial_tiles, classifier, monkeypatch, request) -> None:
    from agent.ingest.commit import Committer
    from agent.ingest.job import PipelineError

    def broken(self, store, batch):
        raise PipelineError("cannot commit to the test database: disk I/O error")

    class SlowLog(logging.Handler):
        # Logging the failure takes a while (a traceback to a slow console): whoever sees the
        # pipeline finished meanwhile must already see its error.
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "ingest-commit failed":
                time.sleep(1.0)

    monkeypatch.setattr(Committer, "process", broken)
    slow = SlowLog()
    logging.getLogger("agent").addHandler(slow)
    request.addfinalizer(lambda: logging.getLogger("agent").removeHandler(slow))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(aerial_tiles["damaged"][0], inbox / "a.png")
    agent = Agent(make_cfg(tmp_path, inbox), classifier=classifier)
    t, code = _run_bg(agent)  # watch mode: it must stop by itself, and say it failed
    t.join(timeout=30)
    assert not t.is_alive() and code == [1]
    assert isinstance(agent.pipeline.error, PipelineError)
