"""Rooms and their front doors: each package's ``__init__`` exports its public names, importing
a room pulls in no room above it and no heavy library. (The static check of the import
direction is the import-linter contract in pyproject.toml, run by .ci/run.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: what each room may load, its own modules aside (the layers below it)
BELOW = {
    "agent.core": [],
    "agent.store": ["agent.core"],
    "agent.imaging": ["agent.core"],
    "agent.report": ["agent.core", "agent.store", "agent.imaging", "drivers", "models", "sync"],
}
ROOMS = ["agent.core", "agent.store", "agent.imaging", "agent.ingest", "agent.live", "agent.report",
         "agent.service", "agent.cli", "agent.bench", "drivers", "models", "sync"]
HEAVY = ["cv2", "openvino", "tensorflow", "google.cloud", "paho", "prometheus_client", "PIL"]


def loaded_after(module: str) -> list[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("room", sorted(BELOW))
def test_importing_a_room_loads_nothing_above_it_and_nothing_heavy(room: str) -> None:
    loaded = loaded_after(room)
    allowed = [room, *BELOW[room]]
    above = [
        m for m in loaded
        if any(m == r or m.startswith(r + ".") for r in ROOMS)
        and not any(m == a or m.startswith(a + ".") for a in allowed)
    ]
    assert not above, f"importing {room} loaded {above}"
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert not heavy, f"importing {room} loaded {heavy}"


def test_rooms_export_their_public_names() -> None:
    import agent.core as core
    import agent.imaging as imaging
    import agent.report as report
    import agent.store as store
    from agent.core.config import Config
    from agent.imaging.decode import decode_image
    from agent.report.build import write_report
    from agent.store.db import Store

    assert core.Config is Config and store.Store is Store
    assert imaging.decode_image is decode_image and report.write_report is write_report
    for pkg in (core, store, imaging, report):
        missing = [name for name in pkg.__all__ if not hasattr(pkg, name)]
        assert not missing, f"{pkg.__name__}.__all__ names {missing}"
    assert issubclass(core.MissingExtra, core.SkysiftError)
    assert issubclass(report.ReportError, core.SkysiftError)
