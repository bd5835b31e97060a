"""The sync loop inside the real agent: `skysift run --once` on a folder of real tiles pushes
rows and damaged images before it exits; `skysift sync --once` then sends the ended flight."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from emulators import BQ_PROJECT, bq_client, gcs_client, unique

ROOT = Path(__file__).resolve().parents[1]


def _skysift(cfg_file: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "agent", "-c", str(cfg_file), *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=cfg_file.parent)


def test_agent_run_once_syncs_exactly_once(tmp_path, aerial_tiles, gcs_emulator, bigquery_emulator):
    flight = tmp_path / "inbox" / "survey-1"
    flight.mkdir(parents=True)
    tiles = aerial_tiles["damaged"][:4] + aerial_tiles["undamaged"][:6]
    for t in tiles:
        shutil.copy(t, flight / t.name)
    dataset, bucket = unique("agent"), unique("agent").replace("_", "-")
    cfg_file = tmp_path / "skysift.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "device_id": "agent-drone",
        "source": {"folder": "inbox", "settle_seconds": 0.1},
        "storage": {"dir": "data"},
        "model": {"devices": ["CPU"]},
        "sync": {
            "gcs": {"bucket": bucket, "endpoint": gcs_emulator.endpoint},
            "bigquery": {"project": BQ_PROJECT, "dataset": dataset, "endpoint": bigquery_emulator.endpoint},
            "upload_images": "damaged",
        },
    }))
    assert _skysift(cfg_file, "sync", "init").returncode == 0
    run = _skysift(cfg_file, "run", "--once", "--no-progress")
    assert run.returncode == 0, run.stderr[-3000:]

    bq = bq_client(bigquery_emulator.endpoint)
    frames = f"{BQ_PROJECT}.{dataset}.frames"
    n, distinct, damaged = next(iter(bq.query(
        f"SELECT COUNT(*), COUNT(DISTINCT frame_id), COUNTIF(label = 'damaged') FROM `{frames}`"
    ).result())).values()
    assert n == distinct == len(tiles)  # pushed by the loop's final sync, before the exit
    blobs = list(gcs_client(gcs_emulator.endpoint).list_blobs(bucket))
    assert len(blobs) == damaged
    assert all(b.name.startswith("skysift/agent-drone/survey-1/") for b in blobs)

    # the flight ended before the sync loop's final push, so its row went in the same run
    flights_q = f"SELECT flight_id, frames FROM `{BQ_PROJECT}.{dataset}.flights`"
    rows = [dict(r) for r in bq.query(flights_q).result()]
    assert rows == [{"flight_id": "survey-1", "frames": len(tiles)}]

    # a later sync finds nothing to do and sends nothing twice
    again = _skysift(cfg_file, "sync", "--once")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "bigquery: 0 pushed, 0 pending" in again.stdout
    rows = [dict(r) for r in bq.query(flights_q).result()]
    assert rows == [{"flight_id": "survey-1", "frames": len(tiles)}]
    assert next(iter(bq.query(f"SELECT COUNT(*) FROM `{frames}`").result()))[0] == len(tiles)
