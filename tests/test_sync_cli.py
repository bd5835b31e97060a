"""`skysift sync init | --once | status` as a user runs them, against the real emulators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from emulators import BQ_PROJECT, bq_client, gcs_client, unique
from sync_data import make_frames
from util import free_port

from agent.core.config import parse_config
from agent.store.db import Store

ROOT = Path(__file__).resolve().parents[1]


def _skysift(cfg_file: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "agent", "-c", str(cfg_file), "sync", *args],
                          env=env, capture_output=True, text=True, timeout=timeout)


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "skysift.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_init_once_status(tmp_path, aerial_tiles, gcs_emulator, bigquery_emulator):
    data = {
        "device_id": "cli-drone",
        "storage": {"dir": str(tmp_path / "data")},
        "sync": {
            "gcs": {"bucket": unique("cli").replace("_", "-"), "endpoint": gcs_emulator.endpoint},
            "bigquery": {"project": BQ_PROJECT, "dataset": unique("cli"), "endpoint": bigquery_emulator.endpoint},
            "upload_images": "damaged",
        },
    }
    cfg_file = _write(tmp_path, data)
    cfg = parse_config(data)
    r = _skysift(cfg_file, "init")
    assert r.returncode == 0, r.stderr
    assert "created" in r.stdout and "partitioned by capture_date" in r.stdout
    store = Store(cfg.db_path)
    rows = make_frames(store, aerial_tiles, tmp_path / "in", 9)
    store.end_flight("flight-1")

    r = _skysift(cfg_file, "status", "--json")
    st = json.loads(r.stdout)
    assert st["pending"] == {"bigquery": 9, "bigquery_flights": 1, "gcs (damaged images)": 3}

    r = _skysift(cfg_file, "--once")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bigquery: 9 pushed, 0 pending" in r.stdout
    r = _skysift(cfg_file, "status", "--json")
    assert json.loads(r.stdout)["pending"] == {"bigquery": 0, "bigquery_flights": 0, "gcs (damaged images)": 0}
    blobs = list(gcs_client(gcs_emulator.endpoint).list_blobs(cfg.sync.gcs.bucket))
    assert len(blobs) == sum(r["label"] == "damaged" for r in rows) == 3
    t = f"{BQ_PROJECT}.{cfg.sync.bigquery.dataset}.frames_dedup"
    assert next(iter(bq_client(bigquery_emulator.endpoint).query(f"SELECT COUNT(*) FROM `{t}`").result()))[0] == 9

    # a second --once has nothing to do and still says all is done
    r = _skysift(cfg_file, "--once")
    assert r.returncode == 0 and "0 pending" in r.stdout


def test_once_without_link_exits_nonzero_with_summary(tmp_path, aerial_tiles):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    data = {
        "device_id": "cli-drone",
        "storage": {"dir": str(tmp_path / "data")},
        "sync": {"gcs": {"bucket": "b", "endpoint": dead},
                 "bigquery": {"project": BQ_PROJECT, "endpoint": dead}},
    }
    cfg_file = _write(tmp_path, data)
    store = Store(parse_config(data).db_path)
    make_frames(store, aerial_tiles, tmp_path / "in", 4)
    r = _skysift(cfg_file, "--once", "--timeout", "3")
    assert r.returncode == 1
    assert "bigquery: 0 pushed, 4 pending" in r.stdout and "last error" in r.stdout
    assert "sync incomplete" in r.stderr
    assert store.count_pending("bigquery") == 4  # nothing marked without a confirmation


def test_sync_without_targets_says_so(tmp_path):
    r = _skysift(_write(tmp_path, {"storage": {"dir": str(tmp_path / "d")}}), "--once")
    assert r.returncode == 2 and "no sync target configured" in r.stderr
