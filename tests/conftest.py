"""Shared fixtures: the read-only data beside the project, temp storage, free ports."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the project root (read-only; never copied into the repo)."""
    if not (SHARED_DATA / "aerial-damage").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def aerial_tiles(shared_data: Path) -> dict[str, list[Path]]:
    base = shared_data / "aerial-damage"
    return {
        "damaged": sorted((base / "damaged").glob("*.png")),
        "undamaged": sorted((base / "undamaged").glob("*.png")),
    }


@pytest.fixture(scope="session")
def exif_samples(shared_data: Path) -> Path:
    return shared_data / "exif-samples"


# The GCS and BigQuery emulators (tests/emulators.py), registered here so that one of each
# serves the whole session, however many test files use them.
from emulators import bigquery_emulator, gcs_emulator, make_bigquery, make_gcs  # noqa: E402, F401
