"""The real-systemd tests run only when asked for: `pytest -m systemd tests/systemd` (as root).

They boot a Debian tree with systemd-nspawn, which takes root, debootstrap (first run) and
about a minute, so a plain `pytest` skips them with the command to run them.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "systemd" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="real-systemd test: run `pytest -m systemd tests/systemd` as root")
    for item in items:
        if item.get_closest_marker("systemd") is not None:
            item.add_marker(skip)
