"""skysift as a real systemd service, in a container booted with systemd-nspawn.

The unit written by `skysift service install` must start and reach READY under all its
hardening, classify frames dropped into its folder, be restarted by the watchdog when its
process is frozen (SIGSTOP), and stop cleanly. Run: `pytest -m systemd tests/systemd` (root).

The container is a Debian minbase tree (tests/systemd/build-rootfs.sh, cached) booted with
``--volatile=overlay`` so each run starts from the pristine tree; the project checkout and the
host venv's site-packages are bind-mounted read-only (the container's Python is Debian's 3.11,
which loads the host's cp311 wheels), and /var/lib/skysift is a host temp dir so the test can
drop frames into the inbox.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(900)]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ROOTFS = Path(os.environ.get("SKYSIFT_TEST_ROOTFS", HERE / ".cache" / "rootfs"))
WATCHDOG_S = 6  # the shipped 60 s, shortened by a drop-in so the test does not wait a minute


def _require() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (systemd-nspawn)")
    for tool in ("systemd-nspawn", "nsenter", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing: apt-get install systemd-container debootstrap util-linux")
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the container runs Debian bookworm's Python 3.11: the host venv must be 3.11 too")


class Container:
    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc = proc
        self.log = log
        self.leader = self._find_leader()

    def _find_leader(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited: {self.log.read_text()[-3000:]}")
            try:
                kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            except OSError:
                kids = []
            for k in kids:
                try:
                    if Path(f"/proc/{k}/comm").read_text().strip() == "systemd":
                        return int(k)
                except OSError:
                    continue
            time.sleep(0.1)
        raise RuntimeError("the container's systemd did not appear")

    def run(self, *cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        res = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} -> {res.returncode}\n{res.stdout}\n{res.stderr}")
        return res

    def show(self, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", "skysift.service", *[f"-p{p}" for p in props]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> str:
        return self.run("journalctl", "-u", "skysift.service", "--no-pager", "-o", "cat", check=False).stdout

    def status(self) -> dict:
        # The wrapper `service install` puts on PATH defaults to the service's config.
        res = self.run("/usr/local/bin/skysift", "status", "--json")
        return json.loads(res.stdout)

    def wait(self, predicate, timeout: float, what: str, interval: float = 0.5):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}\n{self.journal()[-3000:]}")


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    _require()
    t0 = time.monotonic()
    subprocess.run([str(HERE / "build-rootfs.sh"), str(ROOTFS)], check=True, timeout=1800)
    built = time.monotonic()
    state = tmp_path_factory.mktemp("var-lib-skysift")
    log = state.parent / "nspawn.log"
    site = sysconfig.get_paths()["purelib"]
    Path("/run/systemd/nspawn").mkdir(parents=True, exist_ok=True)
    cmd = [
        "systemd-nspawn",
        "--directory", str(ROOTFS),
        "--machine", f"skysift-test-{os.getpid()}",
        "--register=no",
        "--keep-unit",
        "--boot",
        "--volatile=overlay",  # every run starts from the pristine tree
        "--console=passive",
        f"--bind-ro={ROOT}:/opt/skysift/src",
        f"--bind-ro={site}:/opt/skysift/host-site",
        f"--bind={state}:/var/lib/skysift",
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    c = Container(proc, log)
    c.state = state  # type: ignore[attr-defined]
    try:
        c.wait(
            lambda: c.run("systemctl", "is-system-running", check=False).stdout.strip()
            in ("running", "degraded"),
            120,
            "the container to boot",
        )
        print(f"\nrootfs ready in {built - t0:.1f}s, container booted in {time.monotonic() - built:.1f}s")
        yield c
    finally:
        # Stop the container we started, by its pid: SIGTERM is a clean poweroff for nspawn.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def test_installed_unit_runs_hardened_classifies_and_is_restarted_by_the_watchdog(container, aerial_tiles):
    c = container
    started = time.monotonic()

    # --- install: exactly the documented command ------------------------------------------------
    out = c.run("/opt/skysift/venv/bin/skysift", "service", "install").stdout
    assert "systemd-sysusers" in out and "daemon-reload" in out
    assert "uid=" in c.run("id", "skysift").stdout
    unit = c.run("systemctl", "cat", "skysift.service").stdout
    assert "ExecStart=/opt/skysift/venv/bin/skysift --config /etc/skysift/skysift.yaml run" in unit
    # Only the watchdog timeout is shortened for the test; all hardening stays as shipped.
    c.run("mkdir", "-p", "/etc/systemd/system/skysift.service.d")
    c.run(
        "sh", "-c",
        f"printf '[Service]\\nWatchdogSec={WATCHDOG_S}\\nRestartSec=1\\n' "
        "> /etc/systemd/system/skysift.service.d/test-watchdog.conf",
    )
    c.run("systemctl", "daemon-reload")

    # --- start: Type=notify, so `systemctl start` returns only after READY=1 --------------------
    c.run("systemctl", "start", "skysift.service", timeout=300)
    props = c.show("ActiveState", "SubState", "MainPID", "StatusText", "NRestarts", "WatchdogUSec", "User")
    assert props["ActiveState"] == "active" and props["SubState"] == "running", props
    assert props["StatusText"], "READY came with a STATUS= line"
    assert props["WatchdogUSec"] == f"{WATCHDOG_S}s"
    pid = int(props["MainPID"])
    assert pid > 0
    assert "told systemd READY" in c.journal()

    # ... and it really runs under the hardening (not just declared in the unit).
    st = c.run("cat", f"/proc/{pid}/status").stdout
    fields = dict(line.split(":\t", 1) for line in st.splitlines() if ":\t" in line)
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"  # a seccomp filter is installed
    assert int(fields["CapEff"].strip(), 16) == 0 and int(fields["CapBnd"].strip(), 16) == 0
    uid = int(fields["Uid"].split()[0])
    assert c.run("id", "-u", "skysift").stdout.strip() == str(uid) and uid != 0
    mounts = c.run("cat", f"/proc/{pid}/mountinfo").stdout
    root_line = next(m for m in mounts.splitlines() if m.split()[4] == "/")
    assert " ro," in f" {root_line.split()[5]},", "ProtectSystem=strict: / is read-only"
    assert any(m.split()[4] == "/var/lib/skysift" and m.split()[5].startswith("rw") for m in mounts.splitlines())

    # --- classify: drop frames into the watched folder ------------------------------------------
    inbox = c.state / "inbox"  # type: ignore[attr-defined]
    tiles = aerial_tiles["damaged"][:3] + aerial_tiles["undamaged"][:3]
    for p in tiles:
        shutil.copy(p, inbox / p.name)
    (inbox / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    for f in inbox.iterdir():
        f.chmod(0o644)
    status = c.wait(
        lambda: (s := c.status())["frames"]["total"] == len(tiles) + 1 and s,
        120,
        "the dropped frames in the database",
    )
    assert status["running"] is True
    assert status["frames"]["classified"] == len(tiles)
    assert status["frames"]["rejected"] == 1
    assert status["engine"]["engine"] in ("openvino", "tensorflow")
    assert len(status["engine"]["model_sha256"]) == 64
    assert "frames" in c.show("StatusText")["StatusText"]

    # --- idle longer than two watchdog periods: the pings keep it alive --------------------------
    time.sleep(2 * WATCHDOG_S + 1)
    props = c.show("NRestarts", "MainPID", "ActiveState")
    assert props == {"NRestarts": "0", "MainPID": str(pid), "ActiveState": "active"}, props

    # --- freeze it: the pings stop, systemd kills and restarts it -------------------------------
    c.run("kill", "-STOP", str(pid))
    frozen = time.monotonic()
    after = c.wait(
        lambda: (p := c.show("NRestarts", "MainPID", "ActiveState", "SubState"))["NRestarts"] == "1"
        and p["MainPID"] not in ("0", str(pid))
        and p["SubState"] == "running"
        and p,
        WATCHDOG_S + 120,
        "the watchdog restart",
    )
    print(f"watchdog restart {time.monotonic() - frozen:.1f}s after SIGSTOP: {after}")
    journal = c.journal()
    assert "Watchdog timeout" in journal or "watchdog" in journal.lower()
    assert "Failed with result 'watchdog'" in journal
    # The database survived the kill: nothing lost, nothing classified twice.
    status = c.status()
    assert status["frames"]["total"] == len(tiles) + 1
    assert status["running"] is True

    # --- stop cleanly -----------------------------------------------------------------------------
    c.run("systemctl", "stop", "skysift.service", timeout=120)
    props = c.show("ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, props
    assert "Deactivated successfully" in c.journal()
    assert c.status()["running"] is False

    # --- what the unit's comments forbid really breaks it: MemoryDenyWriteExecute= ---------------
    dropin = "/etc/systemd/system/skysift.service.d/test-mdwe.conf"
    c.run("sh", "-c", f"printf '[Service]\\nMemoryDenyWriteExecute=yes\\n' > {dropin}")
    c.run("systemctl", "daemon-reload")
    shutil.rmtree(c.state / "ov-cache", ignore_errors=True)  # type: ignore[attr-defined]  # a cold start
    # engine: openvino, so that it fails at once (auto would fall back to TensorFlow, slowly).
    c.run("sed", "-i", "s/^  engine: auto$/  engine: openvino/", "/etc/skysift/skysift.yaml")
    assert c.run("systemctl", "start", "skysift.service", check=False, timeout=300).returncode != 0
    assert "can't protect" in c.journal()  # OpenVINO's JIT needs W+X memory
    c.run("sed", "-i", "s/^  engine: openvino$/  engine: auto/", "/etc/skysift/skysift.yaml")
    c.run("rm", dropin)
    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "stop", "skysift.service")
    c.run("systemctl", "reset-failed", "skysift.service", check=False)

    # --- uninstall: the unit goes, the data stays -----------------------------------------------
    c.run("/opt/skysift/venv/bin/skysift", "service", "uninstall")
    assert c.show("LoadState")["LoadState"] == "not-found"
    assert (c.state / "skysift.db").exists()  # type: ignore[attr-defined]
    print(f"service test body took {time.monotonic() - started:.1f}s")


def test_staged_install_gets_a_config_the_service_can_read_at_first_boot(container):
    """`service install --prefix` stages an image: skysift.yaml is written root:root 0640, since
    the group skysift does not exist before systemd-sysusers runs at first boot. What that boot
    runs (sysusers, then tmpfiles with the `z` line) must leave it readable by the service."""
    c = container
    # A fresh image: no skysift user or group, no config (an earlier test may have made them).
    c.run("sh", "-c", "userdel skysift; groupdel skysift; rm -f /etc/skysift/skysift.yaml", check=False)
    assert c.run("getent", "group", "skysift", check=False).returncode != 0

    out = c.run("/opt/skysift/venv/bin/skysift", "service", "install", "--prefix", "/stage").stdout
    assert "systemd is not running on this root" in out
    staged = "/stage/etc/skysift/skysift.yaml"
    assert c.run("stat", "-c", "%U:%G %a", staged).stdout.split() == ["root:root", "640"]
    c.run("cp", "-a", "/stage/.", "/")  # the image becomes the root, owners and modes kept

    # First boot: systemd-sysusers.service, then systemd-tmpfiles-setup.service (as their units
    # run them; sysusers' unit is conditioned on a first boot, so it is run directly).
    c.run("systemd-sysusers")
    c.run("systemd-tmpfiles", "--create", "--boot", "--exclude-prefix=/dev")
    cfg = "/etc/skysift/skysift.yaml"
    assert c.run("stat", "-c", "%U:%G %a", cfg).stdout.split() == ["root:skysift", "640"]
    c.run("runuser", "-u", "skysift", "--", "head", "-c", "1", cfg)  # readable as the service user

    c.run("systemctl", "daemon-reload")
    c.run("systemctl", "start", "skysift.service", timeout=300)  # Type=notify: returns at READY
    props = c.show("ActiveState", "SubState", "User")
    assert props == {"ActiveState": "active", "SubState": "running", "User": "skysift"}, props
    c.run("systemctl", "stop", "skysift.service", timeout=120)
    c.run("/opt/skysift/venv/bin/skysift", "service", "uninstall")
