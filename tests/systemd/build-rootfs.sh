#!/bin/sh
# Build (once) the Debian tree in which tests/systemd boots a real systemd with systemd-nspawn.
#
# Idempotent: a finished tree is marked with a stamp file and reused; downloaded .debs are kept
# in a cache so that a rebuild does not fetch them again. The tree holds only what Debian must
# provide (systemd, Python 3.11 of the same release as the host, so the host's compiled wheels
# load there) plus an empty venv at /opt/skysift/venv: at test time the host venv's
# site-packages and the project are bind-mounted read-only into it, which is how the test runs
# the code under test without installing anything from the network into the tree.
#
# Usage: tests/systemd/build-rootfs.sh [DIR]   (default: tests/systemd/.cache/rootfs)
# Needs: root, debootstrap, a Debian mirror: DEBIAN_MIRROR, else the first one this machine's
# apt is configured with (so the tree comes from wherever apt-get install does).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache="$here/.cache"
root="${1:-$cache/rootfs}"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    # deb822 sources (URIs: ...) first, then the one-line format (deb URI suite ...); skip the
    # security archive, which has no full suite to bootstrap from.
    mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' | grep -v security | head -n 1)
    [ -n "$mirror" ] || mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' \
        | grep -v security | head -n 1)
fi
[ -n "$mirror" ] || { echo "build-rootfs.sh: no Debian mirror found in apt's sources; set DEBIAN_MIRROR" >&2; exit 1; }
stamp="$root/.skysift-rootfs-v2"

if [ -f "$stamp" ]; then
    echo "rootfs ready: $root"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "build-rootfs.sh: must run as root (debootstrap)" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "build-rootfs.sh: apt-get install debootstrap" >&2; exit 1; }

mkdir -p "$cache/debs"
rm -rf "$root"
# minbase + systemd as PID 1 + Python. procps for debugging inside the container by hand.
debootstrap --variant=minbase --cache-dir="$cache/debs" \
    --include=systemd,systemd-sysv,dbus,python3,procps \
    "$suite" "$root" "$mirror"

# A venv without pip. At test time the project checkout is bind-mounted read-only at
# /opt/skysift/src and the host venv's site-packages at /opt/skysift/host-site; this .pth puts
# both on sys.path (as plain paths: the host's editable-install hook, which names host paths
# that ProtectHome= may hide, is deliberately not run).
chroot "$root" python3 -m venv --without-pip /opt/skysift/venv
site=$(chroot "$root" /opt/skysift/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$root/opt/skysift/src" "$root/opt/skysift/host-site"
printf '/opt/skysift/src\n/opt/skysift/host-site\n' > "$root$site/skysift-test.pth"
echo "venv site-packages: $site"
# What `pip install skysift` would create: the console script the unit's ExecStart runs.
cat > "$root/opt/skysift/venv/bin/skysift" <<'PY'
#!/opt/skysift/venv/bin/python
import sys

from agent.cli.main import main

sys.exit(main())
PY
chmod 755 "$root/opt/skysift/venv/bin/skysift"

# No getty or network setup noise in a test container; keep the journal in memory.
chroot "$root" systemctl mask console-getty.service getty@tty1.service systemd-networkd.service \
    systemd-resolved.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer \
    >/dev/null 2>&1 || true
echo "skysift-test" > "$root/etc/hostname"
rm -f "$root/etc/machine-id" && : > "$root/etc/machine-id"
apt_clean() { rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*; }
apt_clean
touch "$stamp"
echo "rootfs ready: $root"
