"""The shipped unit (systemd-analyze verify, security score) and `skysift service install`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.core.config import load_config

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "skysift.service"
SKYSIFT = Path(sys.executable).with_name("skysift")

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")


def skysift(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([str(SKYSIFT), *args], capture_output=True, text=True, timeout=60)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


@pytest.fixture
def installed(tmp_path) -> Path:
    prefix = tmp_path / "root"
    skysift("service", "install", "--prefix", str(prefix), "--exec", str(SKYSIFT))
    return prefix


def test_unit_has_the_service_contract():
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["Restart"] == ["on-failure"]
    assert int(d["WatchdogSec"][0]) >= 30
    assert d["StateDirectory"] == ["skysift"] and d["ConfigurationDirectory"] == ["skysift"]
    assert any(v.startswith("skysift:/etc/skysift/credentials") for v in d["LoadCredential"])
    assert "/etc/skysift/skysift.yaml" in d["ExecStart"][0]
    allowed = " ".join(d["DeviceAllow"])
    for dev in ("char-video4linux", "char-drm", "char-accel", "char-usb_device"):
        assert dev in allowed, dev
    # MemoryDenyWriteExecute=yes breaks OpenVINO's and TensorFlow's JIT; PrivateDevices=yes
    # would hide cameras and accelerators.
    assert "MemoryDenyWriteExecute" not in d
    assert "PrivateDevices" not in d
    assert d["User"] == ["skysift"] and d["DevicePolicy"] == ["closed"]


@needs_analyze
def test_installed_unit_passes_systemd_analyze_verify(installed):
    unit = installed / "etc/systemd/system/skysift.service"
    res = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [ln for ln in (res.stdout + res.stderr).splitlines() if "skysift" in ln]
    assert res.returncode == 0 and not problems, res.stdout + res.stderr


@needs_analyze
@pytest.mark.parametrize("which", ["shipped", "installed"])
def test_security_exposure_at_most_1_5(which, installed):
    unit = UNIT if which == "shipped" else installed / "etc/systemd/system/skysift.service"
    res = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for skysift\.service: (\d+\.\d)", res.stdout + res.stderr)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= 1.5, res.stdout


def test_install_writes_unit_user_dirs_and_a_working_config(installed):
    prefix = installed
    unit = (prefix / "etc/systemd/system/skysift.service").read_text()
    assert f"ExecStart={SKYSIFT} --config /etc/skysift/skysift.yaml run" in unit
    assert (prefix / "etc/sysusers.d/skysift.conf").read_text().count("skysift") >= 3
    assert "/var/lib/skysift/inbox" in (prefix / "etc/tmpfiles.d/skysift.conf").read_text()
    creds = prefix / "etc/skysift/credentials"
    assert creds.is_dir() and (creds.stat().st_mode & 0o777) == 0o700
    cfg_path = prefix / "etc/skysift/skysift.yaml"
    assert (cfg_path.stat().st_mode & 0o777) == 0o640
    cfg = load_config(cfg_path)  # the template is a valid config ...
    assert cfg.storage.dir == Path("/var/lib/skysift")  # ... with the service's paths
    assert cfg.source.folder == Path("/var/lib/skysift/inbox")
    assert cfg.db_path == Path("/var/lib/skysift/skysift.db")
    # No systemd on a temp root: the directories tmpfiles would create are made directly.
    assert (prefix / "var/lib/skysift/inbox").is_dir()
    # `sudo skysift status` on the device: a wrapper defaulting to the service's config.
    wrapper = prefix / "usr/local/bin/skysift"
    assert os.access(wrapper, os.X_OK)
    res = subprocess.run([str(wrapper), "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "skysift" in res.stdout
    assert "SKYSIFT_CONFIG:=/etc/skysift/skysift.yaml" in wrapper.read_text()


def _tmpfiles_line(text: str, path: str) -> list[str]:
    return next(ln.split() for ln in text.splitlines() if ln.split()[1:2] == [path])


def test_tmpfiles_gives_the_config_its_group_at_boot(tmp_path):
    """A staged install (an image) writes skysift.yaml root:root: the group skysift does not
    exist before systemd-sysusers runs at first boot. The `z` line fixes the group at boot."""
    shipped = (ROOT / "systemd" / "skysift.tmpfiles.conf").read_text()
    assert _tmpfiles_line(shipped, "/etc/skysift/skysift.yaml") == [
        "z", "/etc/skysift/skysift.yaml", "0640", "root", "skysift", "-"
    ]
    prefix = tmp_path / "root"
    skysift("service", "install", "--prefix", str(prefix), "--user", "drone")
    installed = (prefix / "etc/tmpfiles.d/skysift.conf").read_text()
    assert _tmpfiles_line(installed, "/etc/skysift/skysift.yaml")[3:5] == ["root", "drone"]
    assert _tmpfiles_line(installed, "/etc/skysift")[3:5] == ["root", "root"]


def test_install_keeps_an_existing_config_and_substitutes_the_user(tmp_path):
    prefix = tmp_path / "root"
    cfg = prefix / "etc/skysift/skysift.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("device_id: drone-7\n")
    out = skysift("service", "install", "--prefix", str(prefix), "--user", "drone").stdout
    assert "kept the existing" in out
    assert cfg.read_text() == "device_id: drone-7\n"
    unit = directives((prefix / "etc/systemd/system/skysift.service").read_text())
    assert unit["User"] == ["drone"] and unit["Group"] == ["drone"]
    sysusers = (prefix / "etc/sysusers.d/skysift.conf").read_text()
    assert re.search(r"^u\s+drone\s", sysusers, re.M) and re.search(r"^m\s+drone\s+video", sysusers, re.M)
    assert "skysift  skysift" not in (prefix / "etc/tmpfiles.d/skysift.conf").read_text()
    skysift("service", "install", "--prefix", str(prefix), "--force-config")
    assert "storage:" in cfg.read_text()
    # Someone else's /usr/local/bin/skysift is never overwritten.
    foreign = prefix / "usr/local/bin/skysift"
    foreign.write_text("#!/bin/sh\necho mine\n")
    out = skysift("service", "install", "--prefix", str(prefix)).stdout
    assert "not ours" in out and foreign.read_text() == "#!/bin/sh\necho mine\n"
    skysift("service", "uninstall", "--prefix", str(prefix))
    assert foreign.exists()


def test_dry_run_changes_nothing(tmp_path):
    prefix = tmp_path / "root"
    out = skysift("service", "install", "--prefix", str(prefix), "--dry-run").stdout
    assert "would write" in out and str(prefix / "etc/systemd/system/skysift.service") in out
    assert not prefix.exists()


def test_bad_user_and_exec_are_refused(tmp_path):
    res = skysift("service", "install", "--prefix", str(tmp_path), "--user", "Bad User", check=False)
    assert res.returncode == 1 and "not a valid system user" in res.stderr
    res = skysift("service", "install", "--prefix", str(tmp_path), "--exec", "relative/skysift", check=False)
    assert res.returncode == 1 and "absolute path" in res.stderr


def test_uninstall_keeps_data_unless_purged(installed):
    prefix = installed
    (prefix / "var/lib/skysift/skysift.db").write_bytes(b"")
    out = skysift("service", "uninstall", "--prefix", str(prefix)).stdout
    assert "kept" in out
    assert not (prefix / "etc/systemd/system/skysift.service").exists()
    assert not (prefix / "etc/sysusers.d/skysift.conf").exists()
    assert (prefix / "etc/skysift/skysift.yaml").exists()
    assert (prefix / "var/lib/skysift/skysift.db").exists()
    assert not (prefix / "usr/local/bin/skysift").exists()
    skysift("service", "uninstall", "--prefix", str(prefix), "--purge")
    assert not (prefix / "etc/skysift").exists() and not (prefix / "var/lib/skysift").exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("systemd-sysusers"), reason="needs root and systemd")
def test_sysusers_and_tmpfiles_snippets_apply_to_a_root(installed):
    """systemd's own tools accept the snippets and create the user, groups and directories."""
    prefix = installed
    shutil.rmtree(prefix / "var/lib/skysift")
    res = subprocess.run(
        ["systemd-sysusers", f"--root={prefix}", str(prefix / "etc/sysusers.d/skysift.conf")],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    passwd = (prefix / "etc/passwd").read_text()
    assert re.search(r"^skysift:x:\d+:\d+:.*:/var/lib/skysift:/usr/sbin/nologin$", passwd, re.M)
    group = (prefix / "etc/group").read_text()
    assert re.search(r"^video:x:\d+:skysift$", group, re.M)
    assert re.search(r"^render:x:\d+:skysift$", group, re.M)
    res = subprocess.run(
        ["systemd-tmpfiles", f"--root={prefix}", "--create", str(prefix / "etc/tmpfiles.d/skysift.conf")],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    inbox = prefix / "var/lib/skysift/inbox"
    assert inbox.is_dir() and (inbox.stat().st_mode & 0o7777) == 0o2770
    gid = int(re.search(r"^skysift:x:(\d+):", group, re.M).group(1))
    cfg = (prefix / "etc/skysift/skysift.yaml").stat()
    assert (cfg.st_uid, cfg.st_gid, cfg.st_mode & 0o7777) == (0, gid, 0o640)
