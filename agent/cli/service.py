"""`skysift service install|uninstall`: run skysift as a hardened systemd service.

``install`` writes, under ``--prefix`` (default ``/``; another root builds an image or a package):

- ``/etc/systemd/system/skysift.service``, the shipped unit with ``ExecStart=`` pointing at the
  skysift that runs this command (so a venv in /opt/skysift/venv, a pipx install or a source
  checkout all work) and ``User=``/``Group=`` set to ``--user``;
- ``/etc/sysusers.d/skysift.conf`` and ``/etc/tmpfiles.d/skysift.conf`` (the system user and
  the directories);
- ``/etc/skysift/skysift.yaml``, the commented example config with ``storage.dir`` set to
  ``/var/lib/skysift`` and the watched folder ``/var/lib/skysift/inbox`` (an existing file is
  kept), and the root-only ``/etc/skysift/credentials/`` for LoadCredential=;
- ``/usr/local/bin/skysift``, a wrapper defaulting ``$SKYSIFT_CONFIG`` to the service's config.

When the prefix is ``/`` and systemd is running, it then runs ``systemd-sysusers``,
``systemd-tmpfiles --create`` and ``systemctl daemon-reload`` (and ``enable --now`` with
``--now``). ``--dry-run`` prints every step without doing it.
"""

from __future__ import annotations

import argparse
import grp
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from agent.core.errors import SkysiftError

UNIT_NAME = "skysift.service"
DEFAULT_EXEC = "/opt/skysift/venv/bin/skysift"
STATE_DIR = "/var/lib/skysift"
INBOX = f"{STATE_DIR}/inbox"
WRAPPER = "usr/local/bin/skysift"
WRAPPER_MARK = "# written by `skysift service install`"


class ServiceError(SkysiftError):
    """The service files cannot be found, written or activated."""


def systemd_dir() -> Path:
    """Where the shipped unit files are: the source tree, or share/skysift/systemd of the venv."""
    candidates = [
        Path(__file__).resolve().parents[2] / "systemd",
        Path(sys.prefix) / "share" / "skysift" / "systemd",
    ]
    for c in candidates:
        if (c / UNIT_NAME).is_file():
            return c
    raise ServiceError(
        "cannot find the shipped systemd files (looked in "
        + ", ".join(str(c) for c in candidates)
        + ")"
    )


def default_exec() -> str:
    """The skysift executable the unit should run: the one running this command."""
    here = Path(sys.prefix) / "bin" / "skysift"
    if here.is_file():
        return str(here)
    found = shutil.which("skysift")
    return found or DEFAULT_EXEC


def render_unit(text: str, exec_path: str, user: str) -> str:
    """The shipped unit with ExecStart's program and the service user substituted."""
    if not os.path.isabs(exec_path) or any(c.isspace() for c in exec_path):
        raise ServiceError(f"--exec must be an absolute path without spaces, got {exec_path!r}")
    text, n = re.subn(r"^(ExecStart=)\S+", lambda m: m.group(1) + exec_path, text, count=1, flags=re.M)
    if n != 1:
        raise ServiceError("the shipped unit has no ExecStart= line")
    text = re.sub(r"^User=.*$", f"User={user}", text, flags=re.M)
    text = re.sub(r"^Group=.*$", f"Group={user}", text, flags=re.M)
    return text


def render_user_files(sysusers: str, tmpfiles: str, user: str) -> tuple[str, str]:
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,30}", user):
        raise ServiceError(f"--user {user!r} is not a valid system user name")
    if user == "skysift":
        return sysusers, tmpfiles
    sysusers = re.sub(r"^(u|m)(\s+)skysift\b", lambda m: m.group(1) + m.group(2) + user, sysusers, flags=re.M)
    tmpfiles = re.sub(r"\bskysift(\s+)skysift\b", f"{user}\\1{user}", tmpfiles)
    # the config's group (its `z` line: owner root, group the service user's)
    tmpfiles = re.sub(r"\broot(\s+)skysift\b", f"root\\1{user}", tmpfiles)
    return sysusers, tmpfiles


def render_config(example: str) -> str:
    """The example config with the service's paths; every other key stays commented default."""
    text, n1 = re.subn(r"^(  folder:) null\b", rf"\1 {INBOX}", example, count=1, flags=re.M)
    text, n2 = re.subn(r"^(  dir:) skysift-data\b", rf"\1 {STATE_DIR}", text, count=1, flags=re.M)
    if n1 != 1 or n2 != 1:
        raise ServiceError("agent/core/skysift.example.yaml no longer has source.folder / storage.dir lines")
    header = (
        "# /etc/skysift/skysift.yaml: configuration of the skysift service (written by\n"
        "# `skysift service install`; edit freely, then `systemctl restart skysift`).\n"
        "# Secrets: put files in /etc/skysift/credentials/ (root only) and name them here by file\n"
        "# name, e.g. mqtt.password_file: mqtt-password, sync.credentials_file: gcs-key.json.\n\n"
    )
    return header + text


def render_wrapper(exec_path: str) -> str:
    """/usr/local/bin/skysift: the service's skysift, with the service's config by default, so
    that `sudo skysift status` on the device reports on the service."""
    return (
        "#!/bin/sh\n"
        f"{WRAPPER_MARK}\n"
        ": \"${SKYSIFT_CONFIG:=/etc/skysift/skysift.yaml}\"\n"
        "export SKYSIFT_CONFIG\n"
        f'exec {exec_path} "$@"\n'
    )


def _ours(path: Path) -> bool:
    try:
        return WRAPPER_MARK in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


@dataclass
class Plan:
    """What install/uninstall will do, so --dry-run can show exactly that."""

    files: list[tuple[Path, str, int]] = field(default_factory=list)  # path, content, mode
    dirs: list[tuple[Path, int]] = field(default_factory=list)
    remove: list[Path] = field(default_factory=list)
    #: run before the removals; failures are fine (e.g. stopping a unit that is not loaded)
    pre_commands: list[list[str]] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def systemd_running(prefix: Path) -> bool:
    return prefix == Path("/") and Path("/run/systemd/system").is_dir()


def plan_install(prefix: Path, user: str, exec_path: str, now: bool, force_config: bool) -> Plan:
    from agent.core.config import example_config

    src = systemd_dir()
    unit = render_unit((src / UNIT_NAME).read_text(encoding="utf-8"), exec_path, user)
    sysusers, tmpfiles = render_user_files(
        (src / "skysift.sysusers.conf").read_text(encoding="utf-8"),
        (src / "skysift.tmpfiles.conf").read_text(encoding="utf-8"),
        user,
    )
    p = Plan()
    root = prefix
    p.files.append((root / "etc/systemd/system" / UNIT_NAME, unit, 0o644))
    p.files.append((root / "etc/sysusers.d/skysift.conf", sysusers, 0o644))
    p.files.append((root / "etc/tmpfiles.d/skysift.conf", tmpfiles, 0o644))
    cfg_path = root / "etc/skysift/skysift.yaml"
    if cfg_path.exists() and not force_config:
        p.notes.append(f"kept the existing {cfg_path} (--force-config overwrites it)")
    else:
        p.files.append((cfg_path, render_config(example_config()), 0o640))
    p.dirs.append((root / "etc/skysift/credentials", 0o700))
    wrapper = root / WRAPPER
    if wrapper.exists() and not _ours(wrapper):
        p.notes.append(f"left {wrapper} alone (not ours); run {exec_path} -c /etc/skysift/skysift.yaml")
    elif Path(exec_path) != Path("/") / WRAPPER:
        p.files.append((wrapper, render_wrapper(exec_path), 0o755))
    if systemd_running(prefix):
        p.commands.append(["systemd-sysusers", "/etc/sysusers.d/skysift.conf"])
        p.commands.append(["systemd-tmpfiles", "--create", "/etc/tmpfiles.d/skysift.conf"])
        p.commands.append(["chgrp", user, "/etc/skysift/skysift.yaml"])
        p.commands.append(["systemctl", "daemon-reload"])
        if now:
            p.commands.append(["systemctl", "enable", "--now", UNIT_NAME])
    else:
        # An image being built, or no systemd here: the directories tmpfiles would make.
        p.dirs.append((root / STATE_DIR.lstrip("/") / "inbox", 0o2770))
        p.notes.append(
            "systemd is not running on this root: on first boot systemd-sysusers and "
            "systemd-tmpfiles create the user and directories and give skysift.yaml its group; "
            "then `systemctl enable --now skysift`"
        )
    return p


def plan_uninstall(prefix: Path, purge: bool) -> Plan:
    p = Plan()
    if systemd_running(prefix):
        p.pre_commands.append(["systemctl", "disable", "--now", UNIT_NAME])
    p.remove += [
        prefix / "etc/systemd/system" / UNIT_NAME,
        prefix / "etc/sysusers.d/skysift.conf",
        prefix / "etc/tmpfiles.d/skysift.conf",
    ]
    if _ours(prefix / WRAPPER):
        p.remove.append(prefix / WRAPPER)
    if purge:
        p.remove += [prefix / "etc/skysift", prefix / STATE_DIR.lstrip("/")]
    else:
        p.notes.append(f"kept {prefix / 'etc/skysift'} and {prefix / STATE_DIR.lstrip('/')} (--purge deletes them)")
    if systemd_running(prefix):
        p.commands.append(["systemctl", "daemon-reload"])
    p.notes.append("the system user stays (systemd never deletes sysusers users)")
    return p


def execute(plan: Plan, dry_run: bool, out=sys.stdout) -> None:
    for path, content, mode in plan.files:
        print(f"{'would write' if dry_run else 'write'} {path} ({mode:o})", file=out)
        if not dry_run:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(content, encoding="utf-8")
            os.chmod(tmp, mode)
            os.replace(tmp, path)
    for path, mode in plan.dirs:
        print(f"{'would create' if dry_run else 'create'} {path}/ ({mode:o})", file=out)
        if not dry_run:
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, mode)
    for cmd in plan.pre_commands:
        _run(cmd, dry_run, out, check=False)
    for path in plan.remove:
        if not path.exists():
            continue
        print(f"{'would remove' if dry_run else 'remove'} {path}", file=out)
        if not dry_run:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    for cmd in plan.commands:
        _run(cmd, dry_run, out, check=True)
    for note in plan.notes:
        print(f"note: {note}", file=out)


def _run(cmd: list[str], dry_run: bool, out, check: bool) -> None:
    print(f"{'would run' if dry_run else 'run'}: {' '.join(cmd)}", file=out)
    if dry_run:
        return
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 and check:
        raise ServiceError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")


def _install(args: argparse.Namespace) -> int:
    prefix = Path(args.prefix)
    if not args.dry_run and prefix == Path("/") and os.geteuid() != 0:
        raise ServiceError("installing into / needs root (try sudo, or --dry-run to see the steps)")
    plan = plan_install(prefix, args.user, args.exec_path or default_exec(), args.now, args.force_config)
    execute(plan, args.dry_run)
    if not args.dry_run:
        _fix_config_group(prefix, args.user)
        if not args.now and systemd_running(prefix):
            print("next: edit /etc/skysift/skysift.yaml, then `systemctl enable --now skysift`")
    return 0


def _fix_config_group(prefix: Path, user: str) -> None:
    # Without systemd the group may still exist (a package built on the target).
    cfg = prefix / "etc/skysift/skysift.yaml"
    try:
        gid = grp.getgrnam(user).gr_gid
    except KeyError:
        return
    if os.geteuid() == 0 and cfg.exists():
        os.chown(cfg, 0, gid)


def _uninstall(args: argparse.Namespace) -> int:
    prefix = Path(args.prefix)
    if not args.dry_run and prefix == Path("/") and os.geteuid() != 0:
        raise ServiceError("uninstalling from / needs root")
    execute(plan_uninstall(prefix, args.purge), args.dry_run)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "service",
        help="install or remove the systemd service",
        description="Run skysift as a hardened systemd service: install writes the unit, the "
        "system user, the directories and a config template; uninstall removes them.",
    )
    ssub = p.add_subparsers(dest="service_command", metavar="ACTION", required=True)

    inst = ssub.add_parser(
        "install",
        help="write the unit, user, directories and config template",
        description="Write skysift.service (ExecStart: this skysift), the sysusers and tmpfiles "
        "entries, /etc/skysift/skysift.yaml (kept if present) and the /usr/local/bin/skysift "
        "wrapper under --prefix; on a running systemd, reload it (and start with --now).",
    )
    inst.add_argument("--prefix", default="/", metavar="DIR", help="root to install into (default /)")
    inst.add_argument("--user", default="skysift", metavar="NAME", help="system user the service runs as")
    inst.add_argument(
        "--exec",
        dest="exec_path",
        default=None,
        metavar="PATH",
        help="skysift executable for ExecStart (default: the one running this command)",
    )
    inst.add_argument("--now", action="store_true", help="also enable and start the service")
    inst.add_argument(
        "--force-config", action="store_true", help="overwrite an existing /etc/skysift/skysift.yaml"
    )
    inst.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")
    inst.set_defaults(func=_install)

    un = ssub.add_parser(
        "uninstall",
        help="stop, disable and remove the service files",
        description="Stop and disable skysift.service and remove what install wrote; the "
        "configuration and the data stay unless --purge.",
    )
    un.add_argument("--prefix", default="/", metavar="DIR", help="root it was installed into (default /)")
    un.add_argument(
        "--purge", action="store_true", help="also delete /etc/skysift and /var/lib/skysift (all data!)"
    )
    un.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")
    un.set_defaults(func=_uninstall)
