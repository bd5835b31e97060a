"""`skysift bench`: the workloads are what they claim, and a tiny run reports consistent numbers.

Speed itself is not asserted (that is what the benchmark is for); structure and consistency are.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.bench.engines import engine_specs
from agent.bench.measure import _db_summary
from agent.bench.protocol import summarize
from agent.bench.report import to_markdown
from agent.bench.runner import BenchOptions
from agent.bench.workloads import make_frames, make_tiles
from agent.imaging.decode import read_exif
from agent.imaging.xmp import read_xmp
from agent.store.db import Store

ROOT = Path(__file__).resolve().parents[1]


def test_summarize_matches_numpy_percentiles():
    rng = np.random.default_rng(1)
    ms = list(rng.exponential(3.0, 501))
    s = summarize(ms)
    assert s["n"] == 501
    assert s["p50"] == pytest.approx(np.percentile(ms, 50))
    assert s["p95"] == pytest.approx(np.percentile(ms, 95))
    assert s["mean"] == pytest.approx(np.mean(ms))
    assert s["min"] <= s["p50"] <= s["p95"] <= s["max"]
    assert summarize([]) == {"n": 0}


def test_tiles_workload_is_distinct_and_cached(shared_data, tmp_path):
    data = shared_data / "aerial-damage"
    w = make_tiles(data, tmp_path / "tiles", 450)  # > 2 copies of the 200 shared tiles
    assert w.n == 450 and len({f.name for f in w.files}) == 450
    assert all(f.parent == tmp_path / "tiles" / "inbox" / w.flight for f in w.files)
    assert sorted(p.name for p in w.root.iterdir()) == [w.flight]  # nothing else in the watched folder
    hashes = {hashlib.sha256(f.read_bytes()).hexdigest() for f in w.files}
    assert len(hashes) == 450, "every copy must be a different file, or the agent de-duplicates it"
    a = cv2.imread(str(w.files[0]), cv2.IMREAD_GRAYSCALE)
    b = cv2.imread(str(w.files[200]), cv2.IMREAD_GRAYSCALE)  # the same shared tile, second copy
    assert a.shape == (128, 128) and b.shape == (128, 128)
    assert 1 <= int(np.count_nonzero(a != b)) <= 1
    assert w.bytes_total == sum(f.stat().st_size for f in w.files)
    mtime = w.files[0].stat().st_mtime_ns
    again = make_tiles(data, tmp_path / "tiles", 450)
    assert again.files == w.files and w.files[0].stat().st_mtime_ns == mtime  # reused, not rewritten


@pytest.fixture(scope="module")
def bench_work(shared_data, tmp_path_factory) -> Path:
    """A bench work directory holding two synthesized frames (the CLI test reuses them)."""
    work = tmp_path_factory.mktemp("bench-work")
    make_frames(shared_data / "aerial-damage", work / "frames", 2, tile_px=512)
    return work


def test_frames_workload_is_camera_like(shared_data, bench_work):
    w = make_frames(shared_data / "aerial-damage", bench_work / "frames", 2, tile_px=512)
    assert w.n == 2 and w.meta["tiles_per_frame"] == 48
    assert len({hashlib.sha256(f.read_bytes()).hexdigest() for f in w.files}) == 2
    for f in w.files:
        size = f.stat().st_size
        assert 3_000_000 <= size <= 4_000_000, size
        data = f.read_bytes()
        assert data[:4] == b"\xff\xd8\xff\xe1"  # SOI, then EXIF first, as a camera writes it
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (3000, 4000, 3)
        exif = read_exif(data)
        assert exif.lat == pytest.approx(37.585, abs=0.01) and exif.lon == pytest.approx(36.93, abs=0.01)
        assert exif.alt == pytest.approx(120.0)
        assert exif.captured_at and exif.captured_at.startswith("2026-02-06T09:30")
        xmp = read_xmp(data)  # the DJI pose a drone writes, for the geometry's cost
        assert (xmp.pitch, xmp.rel_alt, xmp.focal_px, xmp.warnings) == (-80.0, 80.0, 3000.0, [])
        assert xmp.lat == pytest.approx(exif.lat, abs=1e-6) and xmp.yaw in (90.0, 270.0)
    # frames differ by their EXIF: the capture time moves 2 s per frame
    assert read_exif(w.files[1].read_bytes()).captured_at != read_exif(w.files[0].read_bytes()).captured_at


def test_db_summary_reads_committed_rows(tmp_path):
    store = Store(tmp_path / "skysift.db")
    rows = []
    for i in range(5):
        rows.append(
            {
                "frame_id": f"{i:032x}",
                "flight_id": "f1",
                "source": f"/x/{i}.png",
                "status": "classified" if i < 4 else "rejected",
                "label": "damaged" if i < 2 else ("undamaged" if i < 4 else None),
                "tiles": 1 if i < 4 else None,
                "classified_at": f"2026-01-01T00:00:0{i}.000Z",
                "inference_ms": 1.0 + i if i < 4 else None,
                "engine": "openvino" if i < 4 else None,
                "device": "CPU",
                "precision": "bf16",
            }
        )
    store.add_frames(rows)
    store.close()
    from datetime import datetime, timezone

    t0 = datetime(2025, 12, 31, 23, 59, 58, tzinfo=timezone.utc).timestamp()
    s = _db_summary(tmp_path / "skysift.db", t0)
    assert (s["rows"], s["classified"], s["rejected"], s["damaged"], s["tiles"]) == (5, 4, 1, 2, 4)
    assert s["first_result_s"] == pytest.approx(2.0)
    assert s["steady_s"] == pytest.approx(4.0)
    assert s["steady_frames_per_s"] == pytest.approx(4 / 4.0)
    assert s["inference_ms"]["n"] == 4 and s["inference_ms"]["mean"] == pytest.approx(2.5)
    assert s["engines"] == ["openvino/CPU/bf16"]


def test_engine_specs_parse_and_reject():
    opts = BenchOptions(engines=["openvino:cpu:int8", "tensorflow"])
    assert engine_specs(opts) == [
        {"engine": "openvino", "device": "CPU", "precision": "int8"},
        {"engine": "tensorflow", "device": "CPU", "precision": "auto"},
    ]
    from agent.bench.runner import BenchError

    with pytest.raises(BenchError, match="unknown engine"):
        engine_specs(BenchOptions(engines=["onnx"]))
    # everything present: OpenVINO's CPU at least, in its default precision and in f32
    every = engine_specs(BenchOptions(engines=["openvino"]))
    assert {"engine": "openvino", "device": "CPU", "precision": "auto"} in every
    assert {"engine": "openvino", "device": "CPU", "precision": "f32"} in every


def _run_bench(tmp_path: Path, shared_data: Path, *args: str, work: Path | None = None) -> tuple[dict, str]:
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    cmd = [
        sys.executable, "-m", "agent", "bench",
        "--data", str(shared_data / "aerial-damage"),
        "--work-dir", str(work or tmp_path / "work"),
        "--json", str(out_json), "--markdown", str(out_md),
        *args,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = out_md.read_text()
    assert md.strip() == proc.stdout.strip()  # the file holds what was printed
    return json.loads(out_json.read_text()), md


def _check_stages(st: dict, n: int, tiles: int) -> None:
    assert st["frames"] == n and st["rows_in_db"] == n and st["rejected"] == 0
    assert st["tiles"] == tiles
    assert set(st["stage_ms_per_frame"]) == {
        "discover", "read_decode", "locate", "classify", "geotag", "commit",
    }
    assert all(v >= 0 for v in st["stage_ms_per_frame"].values())
    assert st["stage_ms_per_frame"]["read_decode"] > 0 and st["stage_ms_per_frame"]["classify"] > 0
    # the stages are timed inside the loop: together they cannot exceed the loop's time
    assert sum(st["stage_s"].values()) <= st["loop_s"] + st["stage_s"]["discover"] + 1e-6
    assert st["frames_per_s_sequential"] == pytest.approx(n / st["loop_s"])
    assert st["peak_rss_mb"] > 50 and st["tensorflow_loaded"] is False
    assert st["engine"] == "openvino"


def _check_pipeline(p: dict, n: int, tiles: int) -> None:
    assert p["rows"] == n and p["classified"] == n and p["tiles"] == tiles
    assert p["frames_per_s_end_to_end"] == pytest.approx(n / p["wall_s"])
    assert 0 < p["first_result_s"] < p["wall_s"]
    assert p["peak_rss_mb"] > 50
    assert p["tensorflow_loaded"] is False, "the OpenVINO path must not import TensorFlow"
    assert all(e.startswith("openvino/") for e in p["engines"])


def test_bench_tiles_smoke(shared_data, tmp_path):
    rep, md = _run_bench(
        tmp_path, shared_data,
        "--workload", "tiles", "--n", "60", "--baseline-sample", "4", "--engines", "openvino:CPU:auto",
    )
    assert rep["machine"]["cores"] >= 1 and rep["machine"]["versions"]["openvino"]
    t = rep["workloads"]["tiles"]
    assert t["files"] == 60 and t["tile_px"] == 128
    _check_stages(t["stages"], 60, 60)
    if "pipeline" in t:
        _check_pipeline(t["pipeline"], 60, 60)
    h = t["handbuilt"]
    assert h["rows_in_db"] == 60 and h["tiles_per_frame"] == 1 and h["frames_per_s"] > 0
    assert h["decode_only_frames_per_s"] > 0 and h["decode_only_cpu_ms_per_frame"] > 0
    assert h["tensorflow_loaded"] is False
    b = t["baseline_2020"]
    assert b["frames"] == 4 and b["sample_of"] == 60 and b["frames_per_s"] > 0
    assert b["total_ms"]["mean"] == pytest.approx(b["read_resize_ms"]["mean"] + b["predict_ms"]["mean"])
    assert b["tensorflow_loaded"] is True
    v = t["verdict"]
    assert v["target_frames_per_s"] == 2000 and isinstance(v["meets_rate"], bool)
    assert v["speedup_vs_2020_loop"] == pytest.approx(v["frames_per_s"] / b["frames_per_s"])
    (e,) = rep["engines"]
    # auto runs the shipped card's INT8 IR (its held-out accuracy equals FP16's)
    assert e["engine"] == "openvino" and e["device"].startswith("CPU") and e["precision"] == "int8"
    assert e["batch1_ms"]["n"] >= 100 and 0 < e["batch1_ms"]["p50"] <= e["batch1_ms"]["p95"]
    assert e["batched_images_per_s"] == pytest.approx(1000 / e["batched_ms_per_image"]["mean"])
    assert e["tensorflow_loaded"] is False
    for heading in ("## Whole pipeline", "### Against a hand-built", "## Time per stage", "## The 2020 loop",
                    "## Per-image inference"):
        assert heading in md
    assert "| openvino | CPU" in md


def test_bench_frames_smoke(shared_data, tmp_path, bench_work):
    rep, md = _run_bench(
        tmp_path, shared_data, "--workload", "frames", "--n", "2", "--no-baseline", "--engines",
        work=bench_work,
    )
    f = rep["workloads"]["frames"]
    assert f["files"] == 2 and f["tile_px"] == 512 and f["meta"]["tiles_per_frame"] == 48
    _check_stages(f["stages"], 2, 96)
    # the frames carry a DJI pose, so the geometry is really run and reported in microseconds
    assert f["stages"]["stage_ms_per_frame"]["locate"] > 0
    assert "| locate (us per frame) |" in md
    assert f["handbuilt"]["rows_in_db"] == 2 and f["handbuilt"]["tiles_per_frame"] == 48
    if "pipeline" in f:
        _check_pipeline(f["pipeline"], 2, 96)
    assert "engines" not in rep and "baseline_2020" not in f
    assert "(b) 4000x3000 JPEG frames" in md


def test_markdown_renders_a_report_without_optional_parts():
    rep = {
        "started_at": "2026-01-01T00:00:00Z",
        "machine": {"cpu": "x", "cores": 2, "memory_mb": 1024, "os": "Linux", "versions": {"openvino": "1"}},
        "workloads": {},
        "sync": {"skipped": "sync/bench.py is not in this checkout"},
    }
    md = to_markdown(rep)
    assert md.startswith("# skysift bench") and "## Sync" in md and "skipped" in md


def test_bench_reports_a_broken_model_and_exits_1(shared_data, tmp_path):
    """A measurement that fails is named in the report, and the exit status says so."""
    bad = tmp_path / "no-model"
    bad.mkdir()
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "agent", "bench", "--data", str(shared_data / "aerial-damage"),
            "--work-dir", str(tmp_path / "work"), "--workload", "tiles", "--n", "5",
            "--no-baseline", "--no-handbuilt", "--engines", "--model", str(bad), "--json", str(out_json),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    rep = json.loads(out_json.read_text())
    assert any(e.startswith("tiles pipeline:") for e in rep["errors"])
    assert any(e.startswith("tiles stages:") for e in rep["errors"])
    assert "model_card.json" in proc.stderr  # the child's own error reaches the user
    assert "**Failed:** tiles pipeline" in proc.stdout


def test_memory_measurement_is_the_agent_on_the_big_png(tmp_path):
    """`bench --memory`: the real agent on the 16-bit RGBA PNG; its peak RSS is reported."""
    from agent.bench.measure import bench_memory
    from agent.bench.options import BenchOptions
    from agent.bench.report import to_markdown

    mem = bench_memory(tmp_path, BenchOptions(timeout_s=600))
    assert mem["classified"] == 1 and mem["tiles"] > 7000  # decoded whole, not rejected
    # the full-depth decode alone would be 959 MB: the bound is max_decode_mb, not luck
    assert 100 < mem["peak_rss_mb"] < 900
    md = to_markdown({
        "started_at": "2026-01-01T00:00:00Z",
        "machine": {"cpu": "x", "cores": 2, "memory_mb": 1024, "os": "Linux", "versions": {}},
        "workloads": {},
        "memory": mem,
    })
    assert "## Decode memory" in md and f"| {mem['peak_rss_mb']:.0f} |" in md
