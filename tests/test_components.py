"""What a configuration needs: the components it starts and the optional extras it relies on.

The extras tests run the real CLI in a subprocess whose import system cannot find one package
(a meta-path finder that raises ModuleNotFoundError, as a venv without ``skysift[cloud]`` does),
so they check what an operator sees, not a mock of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.core.config import parse_config
from agent.service.components import build_components, needs

ROOT = Path(__file__).resolve().parents[1]

# Runs `skysift ARGS...` with the packages named in $SKYSIFT_TEST_BLOCK made unimportable.
# runpy, not `from agent.cli.main import main`, so that the same wrapper runs on any layout.
BLOCKING_WRAPPER = """
import os, runpy, sys

BLOCKED = os.environ["SKYSIFT_TEST_BLOCK"].split(",")

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
runpy.run_module("agent", run_name="__main__", alter_sys=True)
"""

SYNC_GCS = {"sync": {"gcs": {"bucket": "evidence", "endpoint": "http://127.0.0.1:9"}}}
SYNC_BQ = {"sync": {"bigquery": {"project": "relief", "endpoint": "http://127.0.0.1:9"}}}
ENGINE_TF = {"model": {"engine": "tensorflow"}}


def write_cfg(tmp_path: Path, extra: dict) -> Path:
    (tmp_path / "inbox").mkdir(exist_ok=True)
    data = {
        "source": {"folder": str(tmp_path / "inbox"), "settle_seconds": 0.1},
        "storage": {"dir": str(tmp_path / "data"), "min_free_mb": 0},
        "log_level": "warning",
        **extra,
    }
    cfg = tmp_path / "skysift.yaml"
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def skysift_without(blocked: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SKYSIFT_TEST_BLOCK": blocked}
    return subprocess.run(
        [sys.executable, "-c", BLOCKING_WRAPPER, *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    ("extra", "blocked", "key", "pip"),
    [
        (SYNC_GCS, "google.cloud", "sync.gcs.bucket", "pip install 'skysift[cloud]'"),
        (SYNC_BQ, "google.cloud", "sync.bigquery.project", "pip install 'skysift[cloud]'"),
        (ENGINE_TF, "tensorflow", "model.engine: tensorflow", "pip install 'skysift[tensorflow]'"),
    ],
    ids=["gcs", "bigquery", "tensorflow"],
)
def test_config_check_fails_when_a_configured_feature_lacks_its_extra(tmp_path, extra, blocked, key, pip):
    cfg = write_cfg(tmp_path, extra)
    r = skysift_without(blocked, "config", "check", str(cfg))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "OK" not in r.stdout
    assert key in r.stderr and pip in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(("extra", "blocked"), [(SYNC_GCS, "google.cloud"), (ENGINE_TF, "tensorflow")])
def test_run_once_stops_at_start_up_when_an_extra_is_missing(tmp_path, extra, blocked):
    cfg = write_cfg(tmp_path, extra)
    r = skysift_without(blocked, "run", "-c", str(cfg), "--once")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "skysift: " in r.stderr and "is configured but the [" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    # It stopped before the agent started: no database, no run recorded.
    assert not (tmp_path / "data" / "skysift.db").exists()


def test_features_not_configured_need_no_extra(tmp_path):
    # engine: auto only falls back to TensorFlow, and a bucket with upload_images: none is unused.
    cfg = write_cfg(tmp_path, {"sync": {"gcs": {"bucket": "b"}, "upload_images": "none"}})
    r = skysift_without("google.cloud,tensorflow,keras", "config", "check", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout


def test_config_check_passes_with_the_extras_installed(tmp_path):
    pytest.importorskip("google.cloud.storage")
    pytest.importorskip("google.cloud.bigquery")
    cfg = write_cfg(tmp_path, {"sync": {**SYNC_GCS["sync"], **SYNC_BQ["sync"]}})
    r = subprocess.run(
        [sys.executable, "-m", "agent", "config", "check", str(cfg)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout


def test_needs_lists_each_configured_extra_once_per_feature():
    cfg = parse_config({**SYNC_GCS, **ENGINE_TF, "sync": {**SYNC_GCS["sync"], **SYNC_BQ["sync"]}})
    assert [(n.key, n.extra) for n in needs(cfg)] == [
        ("sync.bigquery.project", "cloud"),
        ("sync.gcs.bucket", "cloud"),
        ("model.engine: tensorflow", "tensorflow"),
    ]
    assert needs(parse_config({})) == []


def test_build_components_in_start_order(tmp_path):
    bare = parse_config({"storage": {"dir": str(tmp_path)}})
    assert [type(c).__name__ for c in build_components(bare)] == ["StateFile", "Notifier"]
    full = parse_config(
        {
            "storage": {"dir": str(tmp_path)},
            "metrics": {"listen": "127.0.0.1:9108"},
            "mqtt": {"host": "127.0.0.1"},
            **SYNC_GCS,
        }
    )
    names = [type(c).__name__ for c in build_components(full)]
    assert names == ["StateFile", "Notifier", "MetricsServer", "MqttPublisher", "SyncLoop"]
