"""`skysift run`, `skysift flights` and `skysift frames` as a user runs them: real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from util import count_frames

ROOT = Path(__file__).resolve().parents[1]


def skysift(*args: str, cfg: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", "-c", str(cfg), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )


def json_lines(text: str) -> list[dict]:
    """`--json` output: one JSON object per line."""
    return [json.loads(line) for line in text.splitlines()]


def write_cfg(tmp_path: Path, inbox: Path, cache: Path, **source) -> Path:
    cfg = tmp_path / "skysift.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "source": {"folder": str(inbox), "settle_seconds": 0.2, "rescan_seconds": 0.5, **source},
                "storage": {"dir": str(tmp_path / "data"), "min_free_mb": 0},
                "model": {"devices": ["CPU"], "cache_dir": str(cache)},
                "log_level": "warning",
            }
        )
    )
    return cfg


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ov-cache")



def _run_once_on_a_terminal(cfg: Path) -> str:
    """`run --once` with a pseudo-terminal as stdin/stdout/stderr (so the progress bar shows);
    everything it wrote, once it exited 0."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "agent", "-c", str(cfg), "run", "--once"],
                            cwd=ROOT, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return out.decode(errors="replace")

def test_run_once_then_flights_and_frames_json(tmp_path: Path, aerial_tiles, cache: Path) -> None:
    inbox = tmp_path / "inbox"
    for sub in ("north", "south"):
        (inbox / sub).mkdir(parents=True)
    for t in aerial_tiles["damaged"][:3]:
        shutil.copy(t, inbox / "north")
    for t in aerial_tiles["undamaged"][:4]:
        shutil.copy(t, inbox / "south")
    (inbox / "south" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    cfg = write_cfg(tmp_path, inbox, cache)
    res = skysift("run", "--once", cfg=cfg)
    assert res.returncode == 0, res.stderr

    res = skysift("flights", "--json", cfg=cfg)
    assert res.returncode == 0, res.stderr
    flights = {f["flight_id"]: f for f in json_lines(res.stdout)}
    assert sorted(flights) == ["north", "south"]
    assert flights["north"]["frames"] == 3 and flights["north"]["rejected"] == 0
    assert flights["south"]["frames"] == 5 and flights["south"]["rejected"] == 1
    # The model gets the shipped tiles' labels mostly right.
    assert flights["north"]["damaged"] >= 2 and flights["south"]["damaged"] <= 1
    assert all(f["ended_at"] for f in flights.values())

    res = skysift("frames", "--flight", "south", "--json", cfg=cfg)
    assert res.returncode == 0, res.stderr
    frames = json_lines(res.stdout)
    assert len(frames) == 5
    broken = [f for f in frames if f["status"] == "rejected"]
    assert len(broken) == 1 and broken[0]["reason"] in ("corrupt", "truncated")
    assert broken[0]["source"].endswith("broken.jpg")
    ok = [f for f in frames if f["status"] == "classified"]
    assert all(f["tile_grid"] and f["label"] in ("damaged", "undamaged") for f in ok)

    table = skysift("flights", cfg=cfg)
    assert table.returncode == 0 and "flight_id" in table.stdout and "north" in table.stdout
    table = skysift("frames", "--flight", "north", cfg=cfg)
    assert table.returncode == 0 and table.stdout.count("classified") == 3
    missing = skysift("frames", "--flight", "nope", "--json", cfg=cfg)
    assert missing.returncode == 1 and "no flight 'nope'" in missing.stderr


def test_run_camera_override_on_a_video_file(tmp_path: Path, aerial_tiles, cache: Path) -> None:
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 128))
    for t in aerial_tiles["damaged"][:6]:
        writer.write(cv2.imread(str(t), cv2.IMREAD_COLOR))
    writer.release()
    cfg = write_cfg(tmp_path, tmp_path / "unused", cache)
    res = skysift("run", "--once", "--camera", str(video), cfg=cfg)
    assert res.returncode == 0, res.stderr
    flights = json_lines(skysift("flights", "--json", cfg=cfg).stdout)
    assert len(flights) == 1 and flights[0]["flight_id"].startswith("cam-") and flights[0]["frames"] == 6
    saved = list((tmp_path / "data" / "frames" / flights[0]["flight_id"]).glob("*.jpg"))
    assert len(saved) == 6


def test_sigterm_drains_commits_and_exits_zero(tmp_path: Path, aerial_tiles, cache: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "f1").mkdir(parents=True)
    tiles = aerial_tiles["damaged"] + aerial_tiles["undamaged"]
    for t in tiles[:20]:
        shutil.copy(t, inbox / "f1")
    cfg = write_cfg(tmp_path, inbox, cache)
    db = tmp_path / "data" / "skysift.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "-c", str(cfg), "--log-level", "info", "run"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while count_frames(db) < 20 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert count_frames(db) == 20
        for t in tiles[20:]:  # a burst arrives; stop while it is on its way
            shutil.copy(t, inbox / "f1")
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)  # "within a few seconds"; generous for a loaded CI
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert "SIGTERM received" in err
    conn = sqlite3.connect(db)
    n, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT frame_id) FROM frames").fetchone()
    runs = conn.execute("SELECT ended_at FROM runs").fetchall()
    flight = conn.execute("SELECT ended_at, frames FROM flights WHERE flight_id = 'f1'").fetchone()
    conn.close()
    assert n == distinct and n >= 20
    assert runs and all(r[0] for r in runs)  # the run was closed cleanly
    assert flight[0] is not None and flight[1] == n  # flight counts match the committed rows
    # Nothing was lost: whatever was not taken before the stop is taken by the next run.
    res = skysift("run", "--once", cfg=cfg)
    assert res.returncode == 0, res.stderr
    assert count_frames(db) == len(tiles)


def test_once_shows_a_progress_bar_on_a_terminal(tmp_path: Path, aerial_tiles, cache: Path) -> None:

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for t in aerial_tiles["undamaged"][:12]:
        shutil.copy(t, inbox)
    cfg = write_cfg(tmp_path, inbox, cache)
    text = _run_once_on_a_terminal(cfg)
    assert "12/12" in text and "frame/s" in text


def test_closed_pipe_is_not_an_error(tmp_path):
    """`skysift frames --json | head -c 100`: the reader leaving early is not a crash."""
    import subprocess
    import sys

    from agent.store.db import Store

    store = Store(tmp_path / "data" / "skysift.db")
    rows = [
        {"frame_id": f"{i:032x}", "flight_id": "f1", "source": f"/x/{i}.png", "status": "classified",
         "label": "undamaged", "p_damaged": 0.1, "tiles": 1, "damaged_tiles": 0, "geo_source": "none"}
        for i in range(3000)
    ]
    store.add_frames(rows)
    store.close()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage:\n  dir: {tmp_path / 'data'}\n")
    p = subprocess.run(
        f"'{sys.executable}' -m agent -c '{cfg}' frames --flight f1 --json-array | head -c 100",
        shell=True, capture_output=True, text=True, timeout=120,
    )
    assert p.stdout.startswith("[")
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
    p = subprocess.run(  # the same with JSON lines, the --json of 0.2
        f"'{sys.executable}' -m agent -c '{cfg}' frames f1 --json | head -c 100",
        shell=True, capture_output=True, text=True, timeout=120,
    )
    assert p.stdout.startswith('{"frame_id"')
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


def test_run_with_config_after_the_subcommand(tmp_path: Path, aerial_tiles, cache: Path) -> None:
    """`skysift run -c FILE --once` as people type it; the -c after the subcommand wins."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for t in aerial_tiles["damaged"][:2]:
        shutil.copy(t, inbox)
    cfg = write_cfg(tmp_path, inbox, cache)
    res = subprocess.run(
        [sys.executable, "-m", "agent", "-c", str(tmp_path / "missing.yaml"), "run", "-c", str(cfg), "--once"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert count_frames(tmp_path / "data" / "skysift.db") == 2


def test_config_and_log_level_in_either_position(monkeypatch) -> None:
    from agent.cli.main import build_parser

    monkeypatch.setenv("SKYSIFT_CONFIG", "env.yaml")
    parse = build_parser().parse_args
    assert parse(["run", "--once"]).config == "env.yaml"
    assert parse(["-c", "top.yaml", "run", "--once"]).config == "top.yaml"
    args = parse(["run", "-c", "sub.yaml", "--once"])
    assert args.config == "sub.yaml" and args.once
    assert parse(["--config", "top.yaml", "flights", "--config", "sub.yaml"]).config == "sub.yaml"
    assert parse(["run"]).log_level is None
    assert parse(["--log-level", "debug", "run", "--log-level", "error"]).log_level == "error"
    assert parse(["--log-level", "debug", "run"]).log_level == "debug"
    # nested subcommands take them too
    assert parse(["config", "check", "f.yaml", "--log-level", "warning"]).log_level == "warning"


def _small_db(tmp_path: Path, n: int = 3) -> Path:
    """A database with one flight of ``n`` frames, written directly: no model, no agent."""
    from agent.store.db import Store

    store = Store(tmp_path / "data" / "skysift.db")
    store.add_frames([
        {"frame_id": f"{i:032x}", "flight_id": "f1", "source": str(tmp_path / "in" / "f1" / f"{i}.png"),
         "status": "classified", "label": "undamaged", "p_damaged": 0.1, "tiles": 1,
         "damaged_tiles": 0, "geo_source": "none"}
        for i in range(n)
    ])
    store.close()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"dir": str(tmp_path / "data")}}))
    return cfg


def test_frames_takes_the_flight_as_a_positional_and_json_lines(tmp_path: Path) -> None:
    cfg = _small_db(tmp_path)
    lines = skysift("frames", "f1", "--json", cfg=cfg)
    assert lines.returncode == 0 and not lines.stderr, lines.stderr
    rows = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [r["frame_id"] for r in rows] == [f"{i:032x}" for i in range(3)]
    # --flight, the 0.1 spelling, means the same, with no warning
    alias = skysift("frames", "--flight", "f1", "--json", cfg=cfg)
    assert alias.stdout == lines.stdout and not alias.stderr
    # the 0.1 JSON array is still there for one release, and says it goes
    array = skysift("frames", "f1", "--json-array", cfg=cfg)
    assert array.returncode == 0 and json.loads(array.stdout) == rows
    assert "deprecated" in array.stderr and "--json (JSON lines)" in array.stderr
    flights = skysift("flights", "--json", cfg=cfg)
    assert [json.loads(line)["flight_id"] for line in flights.stdout.splitlines()] == ["f1"]
    assert skysift("frames", "f1", "--flight", "f2", cfg=cfg).returncode == 1
    assert "which flight" in skysift("frames", cfg=cfg).stderr
    # a table shows paths relative to the working directory when that is shorter
    table = subprocess.run([sys.executable, "-m", "agent", "-c", str(cfg), "frames", "f1"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert f" {Path('in', 'f1', '0.png')}" in table.stdout and str(tmp_path) not in table.stdout


def test_sync_subcommands_and_the_old_flags_warn(tmp_path: Path) -> None:
    cfg = _small_db(tmp_path, 1)  # no sync target: `run` stops at exit 2, after parsing
    new = skysift("sync", "run", "--once", "--timeout", "5", cfg=cfg)
    assert new.returncode == 2 and "no sync target" in new.stderr and "deprecated" not in new.stderr
    old = skysift("sync", "--once", "--timeout", "5", cfg=cfg)
    assert old.returncode == 2 and "no sync target" in old.stderr
    assert "`skysift sync --once --timeout 5` is deprecated" in old.stderr
    assert "use `skysift sync run --once --timeout 5`" in old.stderr
    status = skysift("sync", "status", "--json", cfg=cfg)
    assert status.returncode == 0 and json.loads(status.stdout)["pending"] is not None


def test_bench_json_file_still_writes_the_file_and_warns(tmp_path: Path) -> None:
    from agent.cli.main import build_parser

    parse = build_parser().parse_args
    assert parse(["bench", "--json"]).json is True  # JSON on stdout
    assert parse(["bench", "--json", "r.json"]).json == "r.json"  # 0.1: a file
    assert parse(["bench", "--json-out", "r.json"]).json_out == Path("r.json")
    # the cheapest real bench: the engine table of no engine, and nothing else
    args = ["bench", "--workload", "none", "--engines", "--no-baseline", "--no-handbuilt"]
    out = tmp_path / "old.json"
    res = skysift(*args, "--json", str(out), cfg=_small_db(tmp_path, 1))
    assert res.returncode == 0, res.stderr
    assert "deprecated" in res.stderr and f"--json-out {out}" in res.stderr
    assert isinstance(json.loads(out.read_text()), dict) and not res.stdout.lstrip().startswith("{")
    res = skysift(*args, "--json", cfg=_small_db(tmp_path, 1))
    assert res.returncode == 0 and "deprecated" not in res.stderr
    assert json.loads(res.stdout).keys() == json.loads(out.read_text()).keys()


def test_classify_caches_the_model_in_the_user_cache_dir(tmp_path: Path, aerial_tiles) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SKYSIFT_CONFIG"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    res = subprocess.run(
        [sys.executable, "-m", "agent", "classify", "--device", "CPU", str(aerial_tiles["damaged"][0])],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "xdg" / "skysift" / "ov-cache").is_dir()
    assert not (tmp_path / "skysift-data").exists()  # nothing left where the command was typed


def test_log_frames_writes_one_line_per_frame(tmp_path: Path, aerial_tiles, cache: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "f1").mkdir(parents=True)
    for t in aerial_tiles["damaged"][:3]:
        shutil.copy(t, inbox / "f1")
    (inbox / "f1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    cfg = write_cfg(tmp_path, inbox, cache)
    quiet = skysift("--log-level", "info", "run", "--once", cfg=cfg)
    assert quiet.returncode == 0 and "skysift.frames" not in quiet.stderr
    data = yaml.safe_load(cfg.read_text())
    cfg.write_text(yaml.safe_dump({**data, "log": {"frames": True}, "storage": {
        **data["storage"], "dir": str(tmp_path / "data2")}}))
    res = skysift("--log-level", "info", "run", "--once", cfg=cfg)
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if "skysift.frames" in line]
    assert len(lines) == 4, res.stderr
    assert sum(": DAMAGED p_damaged=" in line for line in lines) >= 2
    assert any("broken.jpg: rejected (" in line for line in lines)


def test_log_lines_do_not_break_the_progress_bar(tmp_path: Path, aerial_tiles, cache: Path) -> None:
    """A warning while the bar is drawn starts on a cleared line, not glued after the bar."""

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for t in aerial_tiles["undamaged"][:6]:
        shutil.copy(t, inbox)
    (inbox / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")  # logs "rejected ..."
    cfg = write_cfg(tmp_path, inbox, cache)
    text = _run_once_on_a_terminal(cfg)
    warned = [line for line in text.split("\n") if "rejected" in line and "broken.jpg" in line]
    assert len(warned) == 1, text
    # what the terminal shows of that line: the text after its last carriage return (the
    # terminal turns each "\n" into "\r\n")
    shown = warned[0].rstrip("\r").rsplit("\r", 1)[-1]
    assert "frame/s" not in shown and "WARNING" in shown.split()[:4], repr(warned[0])


def test_demo_poses_are_a_survey_with_overlap_and_the_readers_agree() -> None:
    """`skysift demo`'s frames: a lawnmower at 50 m with ~70 % overlap, and the EXIF GPS and
    the DJI XMP pose that agent.imaging reads say the same."""
    import math

    import cv2
    import numpy as np

    from agent.bench.demo import FOCAL_PX, retag, survey_poses
    from agent.imaging.exif import read_exif
    from agent.imaging.xmp import read_xmp

    poses = survey_poses(9, pitch=-70.0)
    assert {p.rel_alt for p in poses} == {50.0} and {p.pitch for p in poses} == {-70.0}
    assert [p.yaw for p in poses] == [90.0] * 3 + [270.0] * 3 + [90.0] * 3  # there and back
    m_lon = 111_320.0 * math.cos(math.radians(poses[0].lat))
    step = (poses[1].lon - poses[0].lon) * m_lon
    gap = (poses[0].lat - poses[3].lat) * 111_320.0
    assert 1 - step / (3000 / FOCAL_PX * 50) == pytest.approx(0.70, abs=0.01)  # along the line
    assert 1 - gap / (4000 / FOCAL_PX * 50) == pytest.approx(0.70, abs=0.01)  # across the lines
    assert poses[5].lon == poses[0].lon  # the second line ends where the first began
    ok, jpeg = cv2.imencode(".jpg", np.zeros((30, 40, 3), np.uint8))
    data = retag(jpeg.tobytes(), poses[4], 4)
    xmp, exif = read_xmp(data), read_exif(data)
    assert not xmp.warnings and xmp.vendor == "dji"
    assert (xmp.pitch, xmp.yaw, xmp.rel_alt, xmp.focal_px) == (-70.0, 270.0, 50.0, pytest.approx(FOCAL_PX))
    assert xmp.lat == pytest.approx(poses[4].lat, abs=1e-8) and xmp.lon == pytest.approx(poses[4].lon, abs=1e-8)
    assert exif.lat == pytest.approx(xmp.lat, abs=1e-6) and exif.lon == pytest.approx(xmp.lon, abs=1e-6)
    assert exif.alt == pytest.approx(xmp.alt_msl) and exif.captured_at.startswith("2026-02-06T09:30")
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (30, 40, 3)


def test_report_says_why_the_map_is_empty(tmp_path: Path) -> None:
    cfg = _small_db(tmp_path)  # three frames, none with a position
    res = skysift("report", "--out", str(tmp_path / "maps"), cfg=cfg)
    assert res.returncode == 0, res.stderr
    assert "3 frames: 0 on the map, 3 without position" in res.stdout
    assert "nothing on the map: no frame has a position" in res.stdout
    empty = skysift("report", "--out", str(tmp_path / "maps"), cfg=_small_db(tmp_path / "none", 0))
    assert empty.returncode == 0 and "nothing on the map" not in empty.stdout  # no frames: no hint
