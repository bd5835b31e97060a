"""`skysift bench`: whole-pipeline and per-engine benchmarks, against the 2020 loop."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.cli.common import REMOVED_IN, deprecated


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure frames/s, time per stage, per-engine inference time, cold start and peak RSS",
        description="Runs the whole agent pipeline on synthesized folders of images in child "
        "processes and prints a Markdown report. Workloads: (a) 128x128 PNG tiles, "
        "(b) 4000x3000 JPEG frames of ~3.5 MB cut into tiles.",
    )
    p.add_argument(
        "--workload", choices=["tiles", "frames", "all", "none"], default="all",
        help="none: only the engine table (and --sync)",
    )
    p.add_argument("--n", type=int, default=None, help="images per workload (default: 10000 tiles, 300 frames)")
    p.add_argument("--n-tiles", type=int, default=None, help="override --n for the tiles workload")
    p.add_argument("--n-frames", type=int, default=None, help="override --n for the frames workload")
    p.add_argument(
        "--tile-px", type=int, default=512,
        help="model.tile_px for the frames workload (default 512: 8x6 = 48 tiles a frame, and a 1/4 "
        "DCT-reduced JPEG decode gives each tile exactly 128 px)",
    )
    p.add_argument(
        "--engines", nargs="*", default=None, metavar="ENGINE[:DEVICE[:PRECISION]]",
        help="engines to time, e.g. openvino:CPU:f32 openvino:CPU:int8 tensorflow "
        "(default: every engine, device and precision present; give the flag alone for none)",
    )
    p.add_argument("--repeat", type=int, default=1, help="pipeline runs per workload; the median is reported")
    p.add_argument("--no-baseline", action="store_true", help="skip the 2020 loop")
    p.add_argument("--baseline-sample", type=int, default=None, help="images of each workload the 2020 loop reads")
    p.add_argument("--no-handbuilt", action="store_true", help="skip the hand-built OpenVINO loop")
    p.add_argument("--no-stages", action="store_true", help="skip the stage-by-stage run")
    p.add_argument(
        "--memory", action="store_true",
        help="also measure the agent's peak RSS on one 11000x10900 16-bit RGBA PNG",
    )
    p.add_argument("--sync", action="store_true", help="also run the sync benchmark (GCS and BigQuery emulators)")
    p.add_argument("--sync-n", type=int, default=10_000, help="frames in the sync benchmark's flight")
    p.add_argument(
        "--fleet", type=int, default=0, metavar="N",
        help="also simulate N devices (at least 4) syncing at once through kill -9, a BigQuery "
        "quota window and an emulator restart; e.g. --workload none --engines --fleet 100",
    )
    p.add_argument("--data", type=Path, default=None, help="aerial tiles folder (damaged/, undamaged/)")
    p.add_argument("--work-dir", type=Path, default=None, help="keep workloads here and reuse them (default: temp)")
    p.add_argument("--model", type=Path, default=None, help="model directory (default: model.path, else shipped)")
    p.add_argument(
        "--precision", choices=["auto", "f32", "bf16", "f16", "int8"], default=None,
        help="model.precision for the pipeline runs (default: the configuration's)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="model.batch_size for every measurement")
    # 0.1's `--json FILE` wrote a file; `--json` now means JSON on stdout, as everywhere. The old
    # form still writes FILE (with a warning) until REMOVED_IN: nargs="?" tells the two apart.
    p.add_argument(
        "--json", nargs="?", const=True, default=None, metavar="FILE",
        help="print the full report as JSON instead of Markdown (with FILE: deprecated, "
        f"the same as --json-out FILE; goes in {REMOVED_IN})",
    )
    p.add_argument("--json-out", type=Path, default=None, metavar="FILE", help="write the full report as JSON to FILE")
    p.add_argument("--markdown", type=Path, default=None, metavar="FILE", help="write the Markdown report to FILE")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from agent.bench.report import to_markdown
    from agent.bench.runner import DEFAULT_DATA, BenchError, BenchOptions, run_bench
    from agent.cli.common import load

    cfg = load(args)
    workloads = {"all": ["tiles", "frames"], "none": []}.get(args.workload, [args.workload])
    opts = BenchOptions(workloads=workloads)
    if args.n is not None:
        opts.n_tiles = opts.n_frames = args.n
    if args.n_tiles is not None:
        opts.n_tiles = args.n_tiles
    if args.n_frames is not None:
        opts.n_frames = args.n_frames
    for flag, value in (("--n", opts.n_tiles), ("--n", opts.n_frames), ("--repeat", args.repeat), ("--sync-n", args.sync_n)):
        if value < 1:
            print(f"skysift bench: {flag} must be at least 1", file=sys.stderr)
            return 2
    opts.frame_tile_px = args.tile_px
    opts.engines = args.engines
    opts.repeat = max(1, args.repeat)
    opts.baseline = not args.no_baseline
    if args.baseline_sample:
        opts.baseline_tiles = opts.baseline_frames = args.baseline_sample
    opts.stages = not args.no_stages
    opts.handbuilt = not args.no_handbuilt
    opts.sync = args.sync
    opts.memory = args.memory
    opts.sync_n = args.sync_n
    if args.fleet and args.fleet < 4:
        print("skysift bench: --fleet needs at least 4 devices", file=sys.stderr)
        return 2
    opts.fleet = args.fleet
    opts.data_dir = args.data or DEFAULT_DATA
    opts.work_dir = args.work_dir
    opts.model_path = args.model or cfg.model.path
    opts.batch_size = args.batch_size or cfg.model.batch_size
    opts.precision = args.precision or cfg.model.precision
    # the pipeline runs use the configured devices; `auto` is measured as OpenVINO (its first
    # choice), so a missing OpenVINO fails loudly instead of quietly timing TensorFlow
    opts.engine = "openvino" if cfg.model.engine == "auto" else cfg.model.engine
    opts.devices = list(cfg.model.devices)
    if not (opts.data_dir / "damaged").is_dir():
        print(f"skysift bench: no aerial tiles at {opts.data_dir} (give --data DIR)", file=sys.stderr)
        return 2

    def say(msg: str) -> None:
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    try:
        report = run_bench(opts, progress=say)
    except BenchError as exc:
        print(f"skysift bench: {exc}", file=sys.stderr)
        return 1
    md = to_markdown(report)
    as_json = json.dumps(report, indent=2, default=str) + "\n"
    json_out = args.json_out
    if isinstance(args.json, str):
        deprecated(f"skysift bench --json {args.json}", f"skysift bench --json-out {args.json}")
        json_out = json_out or Path(args.json)
    if json_out:
        json_out.write_text(as_json)
    if args.markdown:
        args.markdown.write_text(md + "\n")
    sys.stdout.write(as_json if args.json is True else md + "\n")
    for err in report.get("errors", []):
        print(f"skysift bench: {err}", file=sys.stderr)
    return 1 if report.get("errors") else 0
