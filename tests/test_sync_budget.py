"""The disk budget: synced images go first, oldest first; unsynced data is never deleted."""

from __future__ import annotations

from pathlib import Path

import pytest
from emulators import BQ_PROJECT, unique
from sync_data import make_frames

from agent.core.config import parse_config
from agent.store.db import Store
from agent.store.retention import _db_bytes, check, usage
from sync.bigquery import init_dataset
from sync.gcs import init_bucket
from sync.loop import Syncer, build_targets


def _cfg(tmp_path: Path, gcs=None, bq=None, max_gb: float | None = None, **extra):
    sync = {}
    if gcs is not None:
        sync = {
            "gcs": {"bucket": unique("budget").replace("_", "-"), "endpoint": gcs.endpoint},
            "bigquery": {"project": BQ_PROJECT, "dataset": unique("budget"), "endpoint": bq.endpoint},
            "upload_images": "damaged",
        }
    return parse_config(
        {"device_id": "drone-b", "storage": {"dir": str(tmp_path / "data"), "max_gb": max_gb,
                                              "min_free_mb": 0}, "sync": sync, **extra}
    )


def _with_budget(cfg, budget_bytes: int):
    return cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"max_gb": budget_bytes / 1024**3})})


@pytest.fixture
def camera_frames(tmp_path, aerial_tiles):
    def make(cfg, n, flight="cam-1"):
        store = Store(cfg.db_path)
        return store, make_frames(store, aerial_tiles, cfg.storage.dir / "frames" / flight, n,
                                  flight_id=flight, source="camera")

    return make


def test_synced_images_deleted_oldest_first_unsynced_kept(tmp_path, aerial_tiles, camera_frames,
                                                          gcs_emulator, bigquery_emulator):
    cfg = _cfg(tmp_path, gcs_emulator, bigquery_emulator)
    init_bucket(cfg)
    init_dataset(cfg)
    store, old = camera_frames(cfg, 12)
    # user's own folder images are counted nowhere and never touched
    folder = make_frames(store, aerial_tiles, tmp_path / "user-folder", 3)
    assert Syncer(cfg, store, build_targets(cfg)).cycle().all_done
    _, new = camera_frames(cfg, 12, flight="cam-2")  # not synced yet
    used = usage(store, cfg)
    img = sum(r["bytes"] for r in old + new)
    assert used >= img

    # a budget a little under the current use: a few synced images must go, oldest first
    st = check(store, _with_budget(cfg, used - 3 * old[0]["bytes"]))
    assert st.ok and st.deleted > 0
    gone = [r for r in old if not Path(r["image_path"]).exists()]
    assert gone == old[: len(gone)]  # oldest first
    assert all(Path(r["image_path"]).exists() for r in new + folder)
    assert store.delivery("local_image", gone[0]["frame_id"])["state"] == "dropped"
    # images still counted = all camera images minus the deleted ones (the db is counted too)
    assert usage(store, cfg) - _db_bytes(cfg) == img - sum(r["bytes"] for r in gone)

    # a budget below what the unsynced frames need: every synced image goes, then pause
    st = check(store, _with_budget(cfg, img // 3))
    assert not st.ok and "only unsynced data is left" in st.reason
    assert not any(Path(r["image_path"]).exists() for r in old)
    assert all(Path(r["image_path"]).exists() for r in new + folder)


def test_nothing_synced_means_nothing_deleted_and_pause(tmp_path, camera_frames):
    cfg = _cfg(tmp_path)  # no cloud configured: nothing is ever synced
    store, rows = camera_frames(cfg, 6)
    st = check(store, _with_budget(cfg, usage(store, cfg) // 2))
    assert not st.ok and st.deleted == 0
    assert all(Path(r["image_path"]).exists() for r in rows)
    # under the budget: go on
    assert check(store, _with_budget(cfg, usage(store, cfg) * 2)).ok
    assert check(store, cfg).ok  # no max_gb: no budget
