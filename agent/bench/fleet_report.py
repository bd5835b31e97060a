"""What the fleet left behind, counted on both sides, and the figures the benchmark reports.

:func:`verify` counts the remote (GCS objects, BigQuery rows raw and de-duplicated, load jobs)
and the local databases; :func:`figures` turns a run into the report's numbers and its
Markdown table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from agent.core.config import Config
from agent.store.db import Store


def verify(cfg: Config, devices: list[tuple[str, Path]], bq_endpoint: str) -> dict[str, Any]:
    """Both sides of the sync after the run; ``exactly_once`` says whether they agree."""
    from sync.bigquery import table_ids
    from sync.clients import bigquery_client, storage_client

    names = [b.name for b in storage_client(cfg).list_blobs(cfg.sync.gcs.bucket)]
    bq = bigquery_client(cfg)
    ids = table_ids(cfg)

    def one(sql: str) -> Any:
        return next(iter(bq.query(sql).result()))

    raw = one(f"SELECT COUNT(*) AS n, COUNT(DISTINCT CONCAT(device_id, '/', frame_id)) AS d "
              f"FROM `{ids['frames']}`")
    out: dict[str, Any] = {
        "gcs_objects": len(names),
        "gcs_distinct_objects": len(set(names)),
        "bq_rows": raw["n"],
        "bq_distinct_device_frame": raw["d"],
        "bq_dedup_view_rows": one(f"SELECT COUNT(*) FROM `{ids['frames_dedup']}`")[0],
        "bq_flight_rows": one(f"SELECT COUNT(*) FROM `{ids['flights']}`")[0],
        "emulator_load_jobs": _emulator_load_jobs(bq),
        **_local(devices),
    }
    want = out["local_classified_frames"]
    out["exactly_once"] = (
        out["gcs_objects"] == out["gcs_distinct_objects"] == out["bq_rows"]
        == out["bq_distinct_device_frame"] == out["local_distinct_device_frame"] == want
        and out["bq_flight_rows"] == len(devices) and out["local_undelivered"] == 0
    )
    return out


def _emulator_load_jobs(bq: Any) -> int | None:
    """The load jobs the emulator lists (None where it cannot list them)."""
    try:
        return sum(1 for j in bq.list_jobs(all_users=True) if j.job_type == "load")
    except Exception:  # an emulator without jobs.list: the proxy's count stands alone
        return None


def _local(devices: list[tuple[str, Path]]) -> dict[str, Any]:
    """Sums over the device databases."""
    frames = pairs = batches = found = undelivered = 0
    for device_id, db in devices:
        store = Store(db, readonly=True)
        try:
            ids = {r[0] for r in store.db.execute("SELECT frame_id FROM frames WHERE status = 'classified'")}
            frames += store.count_frames(status="classified")
            pairs += len({(device_id, f) for f in ids})
            q = store.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(json_extract(detail, '$.how') = 'found existing job'), 0) "
                "FROM sync_batches WHERE state = 'done'").fetchone()
            batches += q[0]
            found += q[1]
            undelivered += store.db.execute(
                "SELECT COUNT(*) FROM deliveries WHERE state != 'done'").fetchone()[0]
        finally:
            store.close()
    return {"local_classified_frames": frames, "local_distinct_device_frame": pairs,
            "local_batches_done": batches, "batches_found_after_409": found,
            "local_undelivered": undelivered}


def figures(opts: Any, wall: float, checks: dict[str, Any], proxy: dict[str, Any],
            events: list[dict[str, Any]], process_peaks_mb: list[float],
            emulator_peaks_mb: dict[str, float], pids: list[int]) -> dict[str, Any]:
    """The report entry of one fleet run (JSON-able), with its ``markdown`` table."""
    rows, images = checks["bq_rows"], checks["gcs_objects"]
    first = opts.frames_per_device // 2
    # what a device cannot do with fewer jobs: each wave in batches of batch_rows, one flight row
    minimum = opts.devices * (math.ceil(first / opts.batch_rows)
                              + math.ceil((opts.frames_per_device - first) / opts.batch_rows) + 1)
    res: dict[str, Any] = {
        "devices": opts.devices,
        "frames_per_device": opts.frames_per_device,
        "processes": len(process_peaks_mb),
        "devices_per_process": opts.devices_per_process,
        "batch_rows": opts.batch_rows,
        "wall_s": round(wall, 1),
        "rows_per_s": round(rows / wall, 1),
        "images_per_s": round(images / wall, 1),
        "load_jobs": proxy["jobs_created"],
        "load_jobs_minimum": minimum,
        "jobs_per_1000_rows": round(proxy["jobs_created"] * 1000 / max(rows, 1), 1),
        "peak_mb_devices_sum": round(sum(process_peaks_mb), 1),
        "peak_mb_per_device": round(sum(process_peaks_mb) / opts.devices, 1),
        "peak_mb_emulators": {k: round(v, 1) for k, v in emulator_peaks_mb.items()},
        "proxy": proxy,
        "events": events,
        "checks": checks,
        "exactly_once": checks["exactly_once"],
        "pids": pids,
        "note": "wall time includes the injected faults (kill -9 twice, the quota window, the "
        "emulator outage); peak memory is VmHWM of each device process, summed",
    }
    res["markdown"] = _markdown(res)
    return res


def _markdown(r: dict[str, Any]) -> str:
    c = r["checks"]
    return "\n".join([
        f"| fleet of {r['devices']} devices, {r['processes']} processes | wall s | rows/s | images/s "
        "| load jobs per 1,000 rows | peak MB (sum of processes) |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {r['frames_per_device']} frames each, {c['bq_rows']:,} rows, {c['gcs_objects']:,} images "
        f"| {r['wall_s']} | {r['rows_per_s']} | {r['images_per_s']} | {r['jobs_per_1000_rows']} "
        f"({r['load_jobs']} jobs, {r['load_jobs_minimum']} at least) | {r['peak_mb_devices_sum']:.0f} "
        f"({r['peak_mb_per_device']:.0f} a device) |",
        "",
        f"Exactly once: {'yes' if r['exactly_once'] else '**no**'}: GCS objects {c['gcs_objects']}, "
        f"BigQuery raw rows {c['bq_rows']} (distinct device/frame {c['bq_distinct_device_frame']}, "
        f"de-duplicated view {c['bq_dedup_view_rows']}), local classified frames "
        f"{c['local_classified_frames']}; {r['proxy']['quota_refusals']} job inserts refused with 403 "
        f"quotaExceeded, {c['batches_found_after_409']} batches found already loaded after a restart.",
    ])
