"""Every broken configuration is refused by `skysift config check` (and `skysift run`) with its
dotted key, before anything is created; the example and the defaults still pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.core.config import check_paths, example_config, load_config, parse_config
from agent.core.config_values import check_device, check_listen
from agent.core.errors import ConfigError

# (case id, YAML body, the dotted key the refusal must name). `{d}` is a temp folder holding
# `cert.pem`, `key.pem`, `ca.pem` and `afile` (plain files); nothing else exists there.
BAD = [
    # the second block would hide the invalid tile_px of the first
    ("duplicated-section", "model:\n  tile_px: 4\nmodel:\n  engine: auto\n", "model"),
    ("duplicated-key", "model:\n  tile_px: 64\n  engine: auto\n  tile_px: 256\n", "model.tile_px"),
    ("huge-file-limit", "model:\n  max_file_mb: 1.0e+308\n", "model.max_file_mb"),
    ("infinite-clock-offset", "geotag:\n  clock_offset_s: .inf\n", "geotag.clock_offset_s"),
    ("infinite-rescan", "source:\n  rescan_seconds: .inf\n", "source.rescan_seconds"),
    ("nan-settle", "source:\n  settle_seconds: .nan\n", "source.settle_seconds"),
    ("keepalive-over-16-bit", "mqtt:\n  keepalive: 99999999\n", "mqtt.keepalive"),
    ("topic-wildcard", "mqtt:\n  topic_prefix: 'a/#'\n", "mqtt.topic_prefix"),
    ("topic-leading-slash", "mqtt:\n  topic_prefix: /a\n", "mqtt.topic_prefix"),
    ("topic-empty-level", "mqtt:\n  topic_prefix: a//b\n", "mqtt.topic_prefix"),
    ("topic-nul", 'mqtt:\n  topic_prefix: "a\\0b"\n', "mqtt.topic_prefix"),
    ("cert-without-ca", "mqtt:\n  tls:\n    cert_file: {d}/cert.pem\n    key_file: {d}/key.pem\n",
     "mqtt.tls.cert_file"),
    ("cert-without-key", "mqtt:\n  tls:\n    ca_file: {d}/ca.pem\n    cert_file: {d}/cert.pem\n",
     "mqtt.tls.key_file"),
    ("missing-ca", "mqtt:\n  tls:\n    ca_file: {d}/nope.pem\n", "mqtt.tls.ca_file"),
    ("missing-password-file", "mqtt:\n  host: localhost\n  password_file: {d}/nope\n",
     "mqtt.password_file"),
    ("bad-mqtt-host", "mqtt:\n  host: 999.1.1.1\n", "mqtt.host"),
    ("metrics-bad-ip", "metrics:\n  listen: 999.1.1.1:9108\n", "metrics.listen"),
    ("metrics-port-0", "metrics:\n  listen: 127.0.0.1:0\n", "metrics.listen"),
    ("unknown-time-zone", "geotag:\n  camera_timezone: Mars/Olympus_Mons\n",
     "geotag.camera_timezone"),
    ("storage-dir-is-a-file", "storage:\n  dir: {d}/afile\n", "storage.dir"),
    ("storage-dir-under-a-file", "storage:\n  dir: {d}/afile/data\n", "storage.dir"),
    ("missing-source-folder", "source:\n  folder: {d}/no-inbox\n", "source.folder"),
    ("missing-track", "geotag:\n  track: {d}/no-track.gpx\n", "geotag.track"),
    ("missing-model", "model:\n  path: {d}/no-model\n", "model.path"),
    ("cache-dir-is-a-file", "model:\n  cache_dir: {d}/afile\n", "model.cache_dir"),
    ("missing-credentials", "sync:\n  credentials_file: {d}/nope.json\n", "sync.credentials_file"),
    ("device-typo", "model:\n  devices: [FOO]\n", "model.devices[0]"),
    ("device-typo-in-list", "model:\n  devices: ['HETERO:GPU,CPUU']\n", "model.devices[0]"),
]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch) -> Path:
    # Relative defaults (./inbox) resolve here, and no systemd credentials leak in.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    for name in ("cert.pem", "key.pem", "ca.pem", "afile"):
        (tmp_path / name).write_text("x\n")
    return tmp_path


def _config(folder: Path, body: str) -> Path:
    # storage.dir first so that a case may override it (a second `storage:` would be a duplicate).
    text = body.format(d=folder)
    if not text.startswith("storage:"):
        text = f"storage:\n  dir: {folder}/data\n" + text
    p = folder / "skysift.yaml"
    p.write_text(text)
    return p


def _tree(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@pytest.mark.parametrize(("body", "key"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_load_and_check_refuse_with_the_dotted_key(folder, body, key):
    with pytest.raises(ConfigError) as exc:
        cfg = _config(folder, body)
        check_paths(load_config(cfg), cfg)
    assert f"{key}:" in str(exc.value), str(exc.value)


@pytest.mark.parametrize(("body", "key"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_config_check_cli_refuses_and_creates_nothing(folder, body, key):
    cfg = _config(folder, body)
    before = _tree(folder)
    r = subprocess.run(
        [sys.executable, "-m", "agent", "config", "check", str(cfg)],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode != 0, r.stdout
    assert f"{key}:" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert _tree(folder) == before
    assert not (folder / "data").exists() and not (folder / "inbox").exists()


RUN_BAD = ["storage-dir-is-a-file", "missing-source-folder", "missing-track", "device-typo"]


@pytest.mark.parametrize("case", RUN_BAD)
def test_run_refuses_at_start_before_creating_anything(folder, case):
    body, key = next(c[1:] for c in BAD if c[0] == case)
    cfg = _config(folder, body)
    before = _tree(folder)
    r = subprocess.run(
        [sys.executable, "-m", "agent", "-c", str(cfg), "run", "--once"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode != 0, r.stderr
    assert f"{key}:" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert _tree(folder) == before


def test_run_folder_override_is_checked_too(folder):
    cfg = _config(folder, "")
    r = subprocess.run(
        [sys.executable, "-m", "agent", "-c", str(cfg), "run", "--once",
         "--folder", str(folder / "nope")],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode != 0 and "source.folder:" in r.stderr, r.stderr
    assert not (folder / "data").exists()


def test_classify_refuses_tile_px_0(folder):
    cfg = _config(folder, "")
    r = subprocess.run(
        [sys.executable, "-m", "agent", "-c", str(cfg), "classify", "--tile-px", "0",
         str(folder / "afile")],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode != 0 and "--tile-px" in r.stderr, r.stderr


def test_duplicate_names_both_lines(folder):
    with pytest.raises(ConfigError) as exc:
        load_config(_config(folder, "model:\n  tile_px: 64\n  engine: auto\n  tile_px: 3\n"))
    msg = str(exc.value)  # lines 1-2 are the storage section _config adds
    assert "line 6" in msg and "first at line 4" in msg, msg


def test_yaml_merge_keys_are_not_duplicates(folder):
    body = "x-base: &base {tile_px: 64, engine: auto}\n"
    p = folder / "merge.yaml"
    p.write_text(body + "model:\n  <<: *base\n  tile_px: 256\n")
    with pytest.raises(ConfigError, match="x-base: unknown key"):
        load_config(p)  # the anchor's own key is unknown, but the override is no duplicate


def test_example_config_and_defaults_pass_check(folder):
    p = folder / "example.yaml"
    p.write_text(example_config())
    before = _tree(folder)
    r = subprocess.run(
        [sys.executable, "-m", "agent", "config", "check", str(p)],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert _tree(folder) == before
    check_paths(load_config(None), None)  # the embedded defaults, from this folder
    check_paths(load_config(p), p)


def test_existing_paths_and_a_named_inbox_pass(folder):
    (folder / "inbox").mkdir()
    (folder / "track.csv").write_text("time,lat,lon\n")
    body = (
        "source:\n  folder: inbox\ngeotag:\n  track: track.csv\n"
        "mqtt:\n  host: ground.local\n  topic_prefix: fleet/\n"
        "  tls:\n    ca_file: ca.pem\n    cert_file: cert.pem\n    key_file: key.pem\n"
    )
    p = _config(folder, body)
    cfg = load_config(p)
    check_paths(cfg, p)
    assert cfg.mqtt.topic_prefix == "fleet"  # a trailing '/' is dropped, as Topics always did


def test_secret_named_by_file_name_is_found_where_load_credential_takes_it(folder):
    # /etc/skysift/skysift.yaml says `password_file: mqtt-password`; the file lives in
    # /etc/skysift/credentials/, which systemd hands to the service as $CREDENTIALS_DIRECTORY.
    (folder / "credentials").mkdir()
    (folder / "credentials" / "mqtt-password").write_text("s3cret\n")
    p = _config(folder, "mqtt:\n  password_file: mqtt-password\n")
    check_paths(load_config(p), p)
    p = _config(folder, "mqtt:\n  password_file: other-password\n")
    with pytest.raises(ConfigError, match="mqtt.password_file"):
        check_paths(load_config(p), p)


def test_parse_config_alone_does_not_look_at_the_disk():
    cfg = parse_config({"geotag": {"track": "/nonexistent/track.gpx"}})
    assert cfg.geotag.track == Path("/nonexistent/track.gpx")


@pytest.mark.parametrize(
    "name",
    ["CPU", "gpu", "GPU.1", "NPU", "AUTO", "AUTO:GPU,CPU", "AUTO:-CPU", "HETERO:GPU,CPU",
     "MULTI:GPU.0,GPU.1", "BATCH:GPU(4)", "MYRIAD", "HDDL", "GNA"],
)
def test_documented_devices_are_accepted(name):
    assert check_device(name) == name.upper()


@pytest.mark.parametrize(
    "name", ["FOO", "GPUU", "CPU,GPU", "AUTO:", "HETERO:", "BATCH:GPU,CPU", "MULTI:FOO"]
)
def test_unknown_devices_are_refused(name):
    with pytest.raises(ValueError):
        check_device(name)


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:9108", ":9108", "0.0.0.0:9108", "[::1]:9108", "localhost:9108"]
)
def test_good_listen_addresses(listen):
    assert check_listen(listen) == listen


@pytest.mark.parametrize(
    "listen", ["9108", "host:", "host:65536", "::1:9108", "[nope]:9108", "-x:9108", "a.123:1"]
)
def test_bad_listen_addresses(listen):
    with pytest.raises(ValueError):
        check_listen(listen)
