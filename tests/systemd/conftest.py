"""The real-systemd tests run only when asked for: `pytest -m systemd tests/systemd` (as root),
or with SKYSIFT_SYSTEMD_TESTS=1 (what .ci/run sets after building the container tree).

They boot a Debian tree with systemd-nspawn, which takes root, debootstrap (first run) and
about a minute, so a plain `pytest` skips them with the command to run them.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # CI (.ci/run) builds the rootfs first and sets SKYSIFT_SYSTEMD_TESTS=1 so that these tests
    # run in the same pytest session as everything else.
    if "systemd" in (config.option.markexpr or "") or os.environ.get("SKYSIFT_SYSTEMD_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="real-systemd test: run `pytest -m systemd tests/systemd` as root")
    for item in items:
        if item.get_closest_marker("systemd") is not None:
            item.add_marker(skip)
