"""Config: defaults, validation with dotted key paths, the example file, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent.core.config import Config, example_config, load_config, parse_config, resolve_secret_path
from agent.core.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "skysift.yaml"
    p.write_text(text)
    return p


def test_empty_file_gives_embedded_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, ""))
    assert cfg.model.engine == "auto"
    assert cfg.model.tile_px == 128
    assert cfg.source.folder is None and cfg.source.camera is None
    # the embedded default watches ./inbox relative to the config file
    assert cfg.watch_folder == Path("inbox")
    assert cfg.storage.dir == tmp_path / "skysift-data"
    assert cfg.db_path == tmp_path / "skysift-data" / "skysift.db"
    assert cfg.mqtt.host is None and cfg.sync.gcs.bucket is None


def test_unknown_key_is_rejected_with_its_dotted_path(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, "model:\n  tile_size: 256\n"))
    assert "model.tile_size: unknown key" in str(exc.value)


def test_bad_values_name_every_key_path(tmp_path):
    text = "model:\n  engine: pytorch\n  devices: []\nmqtt:\n  port: 70000\nsync:\n  upload_images: some\n"
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, text))
    msg = str(exc.value)
    for path in ("model.engine", "model.devices", "mqtt.port", "sync.upload_images"):
        assert path in msg, msg


def test_list_index_in_path():
    with pytest.raises(ConfigError) as exc:
        parse_config({"model": {"devices": ["CPU", 3]}})
    assert "model.devices[1]" in str(exc.value)


def test_folder_and_camera_are_exclusive():
    with pytest.raises(ConfigError, match="not both"):
        parse_config({"source": {"folder": "/x", "camera": 0}})


def test_yaml_syntax_error_names_line(tmp_path):
    with pytest.raises(ConfigError, match="line 2"):
        load_config(_write(tmp_path, "model:\n  engine: a: b\n"))


def test_top_level_must_be_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))


def test_devices_are_normalised():
    cfg = parse_config({"model": {"devices": ["gpu", " cpu "]}})
    assert cfg.model.devices == ["GPU", "CPU"]


def test_device_id_cannot_break_topics():
    with pytest.raises(ConfigError, match="device_id"):
        parse_config({"device_id": "a/b"})


def _all_keys(model_cls, prefix=""):
    from pydantic import BaseModel

    for name, field in model_cls.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _all_keys(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_example_config_is_valid_and_documents_every_key():
    data = yaml.safe_load(example_config())
    cfg = parse_config(data)
    assert isinstance(cfg, Config)

    def has(d, dotted):
        for part in dotted.split("."):
            if not isinstance(d, dict) or part not in d:
                return False
            d = d[part]
        return True

    text = example_config()
    missing = [k for k in _all_keys(Config) if not has(data, k) and f"# {k.split('.')[-1]}:" not in text]
    assert not missing, f"keys missing from agent/core/skysift.example.yaml: {missing}"


def test_secret_found_in_credentials_directory(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("s3cret")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert resolve_secret_path(Path("mqtt-password")) == creds / "mqtt-password"


def test_config_check_cli_exit_codes(tmp_path):
    good = _write(tmp_path, "device_id: drone-1\nmodel:\n  engine: openvino\n")
    r = subprocess.run([sys.executable, "-m", "agent", "config", "check", str(good)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage:\n  dri: /tmp\n")
    r = subprocess.run([sys.executable, "-m", "agent", "config", "check", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1
    assert "storage.dri" in r.stderr


def test_config_example_cli_prints_parseable_yaml():
    r = subprocess.run([sys.executable, "-m", "agent", "config", "example"], capture_output=True, text=True)
    assert r.returncode == 0
    parse_config(yaml.safe_load(r.stdout))
