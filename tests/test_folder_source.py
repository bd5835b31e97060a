"""The watched folder: complete files only, flights by subfolder, rescans, symlinks."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from drivers.base import Frame
from drivers.folder import FolderSource, flight_id_for, is_ignored_name


class Collector:
    """Runs ``source.frames`` on a thread and keeps each frame with the bytes it had then."""

    def __init__(self, source: FolderSource, once: bool = False):
        self.source = source
        self.stop = threading.Event()
        self.frames: list[Frame] = []
        self.contents: dict[str, list[bytes]] = {}
        self.thread = threading.Thread(target=self._run, args=(once,), daemon=True)

    def _run(self, once: bool) -> None:
        for f in self.source.frames(self.stop, once=once):
            self.frames.append(f)
            if f.path is not None and not f.meta.get("reject"):
                self.contents.setdefault(f.path.name, []).append(f.path.read_bytes())

    def __enter__(self) -> Collector:
        self.source.open()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.source.close()

    def wait_for(self, pred, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.02)
        return pred()

    def names(self) -> list[str]:
        return sorted(f.path.name for f in self.frames if f.path is not None)


def test_names_and_flight_ids() -> None:
    for name in (".hidden.png", "x.png.tmp", "x.part", "x.jpg.crdownload", "~lock.png", "x.png~", ".x.swp"):
        assert is_ignored_name(name), name
    for name in ("IMG_0001.JPG", "tile_001.png", "a.b.png"):
        assert not is_ignored_name(name), name
    assert flight_id_for("Mission 3 / north") == "Mission_3_north"
    assert flight_id_for("...") == "flight"


def test_once_backfill_flights_by_subfolder_and_ignored_names(tmp_path: Path, aerial_tiles) -> None:
    root = tmp_path / "sdcard"
    (root / "mission-1").mkdir(parents=True)
    (root / "mission 2" / "DCIM" / "100MEDIA").mkdir(parents=True)
    (root / ".thumbnails").mkdir()
    tiles = aerial_tiles["damaged"]
    shutil.copy(tiles[0], root / "a.png")
    shutil.copy(tiles[1], root / "mission-1" / "b.png")
    shutil.copy(tiles[2], root / "mission 2" / "DCIM" / "100MEDIA" / "c.png")
    shutil.copy(tiles[3], root / ".hidden.png")
    shutil.copy(tiles[4], root / "mission-1" / "d.png.part")
    shutil.copy(tiles[5], root / ".thumbnails" / "e.png")
    src = FolderSource(root, settle_seconds=0.2)
    src.open()
    frames = list(src.frames(threading.Event(), once=True))
    by_name = {f.path.name: f for f in frames}
    assert sorted(by_name) == ["a.png", "b.png", "c.png"]
    assert by_name["a.png"].flight_id == "sdcard" and by_name["a.png"].meta["root_level"]
    assert by_name["b.png"].flight_id == "mission-1"
    assert by_name["c.png"].flight_id == "mission_2"  # the first-level folder, sanitised
    assert by_name["c.png"].meta["flight_name"] == "mission 2"
    assert src.flights() == ["mission-1", "mission_2", "sdcard"]
    # The same source does not hand unchanged files over twice.
    assert list(src.frames(threading.Event(), once=True)) == []


def test_slow_writer_is_read_only_when_complete(tmp_path: Path, aerial_tiles) -> None:
    """A writer appending for longer than the settle time, in pauses shorter than it."""
    root = tmp_path / "in"
    root.mkdir()
    data = aerial_tiles["undamaged"][0].read_bytes()
    target = root / "slow.png"
    with Collector(FolderSource(root, settle_seconds=0.4, rescan_seconds=0.2)) as c:
        with open(target, "wb") as f:
            chunk = max(1, len(data) // 12)
            for i in range(0, len(data), chunk):  # ~12 writes, 0.1 s apart: 1.2 s > settle
                f.write(data[i : i + chunk])
                f.flush()
                time.sleep(0.1)
        assert c.wait_for(lambda: "slow.png" in c.contents)
        time.sleep(0.8)  # more rescans: still one hand-over
    assert c.contents["slow.png"] == [data]


def test_write_then_rename_is_taken_at_once(tmp_path: Path, aerial_tiles) -> None:
    """A file renamed into place is complete: no settle wait (settle here is far too long)."""
    root = tmp_path / "in"
    (root / "f1").mkdir(parents=True)
    data = aerial_tiles["damaged"][7].read_bytes()
    with Collector(FolderSource(root, settle_seconds=120, rescan_seconds=120)) as c:
        time.sleep(0.3)  # let the watcher start
        tmp = root / "f1" / ".incoming.png.tmp"
        tmp.write_bytes(data[:100])
        time.sleep(0.2)
        with open(tmp, "ab") as f:
            f.write(data[100:])
        os.rename(tmp, root / "f1" / "final.png")
        assert c.wait_for(lambda: "final.png" in c.contents)
    assert c.contents == {"final.png": [data]}
    assert c.frames[0].flight_id == "f1"


def test_rescan_finds_files_the_watcher_missed(tmp_path: Path, aerial_tiles) -> None:
    root = tmp_path / "in"
    root.mkdir()
    # No watcher at all: only the periodic rescan can see this file.
    with Collector(FolderSource(root, settle_seconds=0.1, rescan_seconds=0.3, use_watcher=False)) as c:
        time.sleep(0.2)
        shutil.copy(aerial_tiles["damaged"][0], root / "late.png")
        assert c.wait_for(lambda: c.names() == ["late.png"])
        # A changed file is a new version: handed over again, once.
        time.sleep(0.2)
        shutil.copy(aerial_tiles["damaged"][1], root / "late.png")
        os.utime(root / "late.png", ns=(time.time_ns(), time.time_ns() + 10**9))
        assert c.wait_for(lambda: len(c.frames) == 2)
        time.sleep(0.7)
    assert c.names() == ["late.png", "late.png"]


def test_watcher_picks_up_new_subfolder_files(tmp_path: Path, aerial_tiles) -> None:
    root = tmp_path / "in"
    root.mkdir()
    staging = tmp_path / "staging" / "mission-9"
    staging.mkdir(parents=True)
    for t in aerial_tiles["undamaged"][:3]:
        shutil.copy(t, staging)
    with Collector(FolderSource(root, settle_seconds=0.1, rescan_seconds=600)) as c:
        time.sleep(0.3)
        shutil.move(str(staging), root / "mission-9")  # a whole folder appears at once
        assert c.wait_for(lambda: len(c.frames) == 3)
    assert {f.flight_id for f in c.frames} == {"mission-9"}


def test_symlinks_outside_the_root_are_refused(tmp_path: Path, aerial_tiles) -> None:
    root = tmp_path / "in"
    root.mkdir()
    outside = tmp_path / "secret.png"
    shutil.copy(aerial_tiles["damaged"][0], outside)
    shutil.copy(aerial_tiles["damaged"][1], root / "inside.png")
    (root / "escape.png").symlink_to(outside)
    (root / "alias.png").symlink_to(root / "inside.png")
    (root / "dangling.png").symlink_to(tmp_path / "nothing.png")
    src = FolderSource(root, settle_seconds=0)
    src.open()
    frames = {f.path.name: f for f in src.frames(threading.Event(), once=True)}
    # A link leaving the root is refused whether or not its target exists; its target is never read.
    assert sorted(frames) == ["alias.png", "dangling.png", "escape.png", "inside.png"]
    assert frames["escape.png"].meta["reject"] == "symlink_outside_root"
    assert frames["dangling.png"].meta["reject"] == "symlink_outside_root"
    assert "reject" not in frames["alias.png"].meta
    # Refused once, not at every rescan.
    assert list(src.frames(threading.Event(), once=True)) == []


def test_missing_root_is_a_source_error(tmp_path: Path) -> None:
    from drivers.base import SourceError

    with pytest.raises(SourceError, match="not a directory"):
        FolderSource(tmp_path / "nope").open()


def test_sd_card_non_frames_are_skipped_and_counted_once(tmp_path: Path, aerial_tiles, caplog) -> None:
    """Logs, sidecars, previews and videos (any case) are never frames: no frame, no WARNING,
    one INFO summary for the scan that found them, none for rescans that find them again."""
    root = tmp_path / "sdcard"
    media = root / "mission-1" / "DCIM" / "100MEDIA"
    media.mkdir(parents=True)
    shutil.copy(aerial_tiles["damaged"][0], media / "DJI_0001.png")
    for name in ("DJI_0002.MP4", "DJI_0002.LRF", "DJI_0002.SRT", "DJI_0001.xmp", "notes.TXT", "DJI_0003.DNG"):
        (media / name).write_bytes(b"not a frame\n")
    (media / "DJI_0004.bin").write_bytes(b"not listed: still handed over\n")
    src = FolderSource(root, settle_seconds=0, ignore_extensions=(".srt", ".xmp", ".txt", ".lrf", ".mp4", ".dng"))
    src.open()
    with caplog.at_level("DEBUG", logger="drivers.folder"):
        names = sorted(f.path.name for f in src.frames(threading.Event(), once=True))
        assert names == ["DJI_0001.png", "DJI_0004.bin"]
        assert list(src.frames(threading.Event(), once=True)) == []  # a rescan: nothing new
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert infos == [
        f"{root}: 6 files that are not frames skipped (.dng 1, .lrf 1, .mp4 1, .srt 1, .txt 1, .xmp 1); "
        "0 flight logs (.SRT) read"
    ]
    assert not [r for r in caplog.records if r.levelno >= 30]
    assert sum("not a frame (.mp4), skipped" in r.getMessage() for r in caplog.records) == 1


def test_srt_logs_go_to_the_track_reader_with_their_flight(tmp_path: Path, aerial_tiles) -> None:
    root = tmp_path / "sdcard"
    (root / "mission-1").mkdir(parents=True)
    shutil.copy(aerial_tiles["damaged"][0], root / "mission-1" / "DJI_0001.png")
    (root / "mission-1" / "DJI_0002.SRT").write_text("1\n00:00:00,000 --> 00:00:00,033\n")
    (root / "DJI_0003.srt").write_text("1\n00:00:00,000 --> 00:00:00,033\n")
    seen: list[tuple[str, str]] = []
    src = FolderSource(root, settle_seconds=0.2, on_track_file=lambda p, fid: seen.append((Path(p).name, fid)))
    src.open()
    frames = list(src.frames(threading.Event(), once=True))  # waits the logs out like frames
    assert [f.path.name for f in frames] == ["DJI_0001.png"]
    assert sorted(seen) == [("DJI_0002.SRT", "mission-1"), ("DJI_0003.srt", "sdcard")]
    assert src.flights() == ["mission-1"]  # a log alone makes no flight
    (root / "DJI_0003.srt").write_text("2\n00:00:01,000 --> 00:00:01,033\n\n")  # rewritten: read again
    assert list(src.frames(threading.Event(), once=True)) == []
    assert seen[-1] == ("DJI_0003.srt", "sdcard") and len(seen) == 3
