"""Markdown rendering of a `skysift bench` report (the JSON report is the data; this is prose)."""

from __future__ import annotations

from typing import Any


def _f(v: Any, fmt: str = ".1f", none: str = "–") -> str:
    if v is None:
        return none
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, (int, float)):
        return format(v, fmt)
    return str(v)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def _speedup(vd: dict) -> str:
    if not vd.get("speedup_vs_2020_loop"):
        return "–"
    out = f"{vd['speedup_vs_2020_loop']:.0f}x"
    if vd.get("speedup_vs_2020_loop_same_work"):
        out += f" ({vd['speedup_vs_2020_loop_same_work']:.0f}x for the same tiled work)"
    return out


WORKLOAD_TITLES = {
    "tiles": "(a) 128x128 PNG tiles",
    "frames": "(b) 4000x3000 JPEG frames",
}


def to_markdown(rep: dict[str, Any]) -> str:
    m = rep["machine"]
    lines = [f"# skysift bench, {rep['started_at']}", ""]
    if rep.get("command"):
        lines += [f"Command: `{rep['command']}`", ""]
    v = m.get("versions", {})
    lines += [
        f"Machine: {m['cpu']}, {m['cores']} cores, {_f(m.get('memory_mb'), 'd')} MB, {m['os']}; "
        f"ISA {', '.join(m.get('isa') or []) or 'baseline'}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in (m.get('load_avg_at_start') or []))}.",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        "",
    ]
    for err in rep.get("errors") or []:
        lines += [f"**Failed:** {err.splitlines()[0]}", ""]
    if rep.get("pipeline_note"):
        lines += [f"Note: {rep['pipeline_note']}.", ""]

    wl = rep.get("workloads", {})
    if wl:
        lines += ["## Whole pipeline (`skysift run --once`, discover → decode → classify → geotag → commit)", ""]
        rows = []
        for kind, e in wl.items():
            p = e.get("pipeline") or {}
            vd = e.get("verdict") or {}
            b = (e.get("baseline_2020") or {}).get("frames_per_s")
            rows.append(
                [
                    f"{WORKLOAD_TITLES.get(kind, kind)}, tile {e['tile_px']} px",
                    _f(e["files"], "d"),
                    _f(p.get("steady_frames_per_s"), ".0f"),
                    _f(p.get("frames_per_s_end_to_end"), ".0f"),
                    _f(p.get("first_result_s_cold_cache"), ".2f") + " s"
                    + (f" ({_f(p['first_result_s_warm_cache'], '.2f')} s warm cache)" if p.get("first_result_s_warm_cache") else ""),
                    _f(p.get("peak_rss_mb"), ".0f") + " MB",
                    _f(p.get("cpu_ms_per_frame"), ".2f") + f" ({_f(p.get('cpu_bound_frames_per_s'), '.0f')})",
                    f"{_f(vd.get('target_frames_per_s'), '.0f')} / {_f(vd.get('meets_rate'))}",
                    _f(b, ".1f"),
                    _speedup(vd),
                ]
            )
        lines += _table(
            [
                "workload",
                "frames",
                "frames/s (steady)",
                "frames/s (incl. start-up)",
                "cold start → first row",
                "peak RSS",
                "CPU ms/frame (ceiling frames/s)",
                "target / met",
                "2020 loop frames/s",
                "speed-up",
            ],
            rows,
        )
        lines += [
            "Steady rate: rows committed after the first commit over the time between first and "
            "last commit. The end-to-end rate includes process start, model compilation and exit. "
            "Cold start: process spawn to the first committed row, with an empty OpenVINO model "
            "cache (first boot), and the median of later runs with the cache warm (a restart). "
            "Peak RSS is the agent process's own (VmHWM); the OpenVINO path loads no TensorFlow. "
            "CPU ms/frame is the agent process's user+system CPU time (all threads) per frame between "
            "its first and last commit; the ceiling, cores / that, is the rate it could reach with the "
            "machine to itself and every core busy (a bound, not a measurement).",
            "",
        ]
        hb = {k: e for k, e in wl.items() if e.get("handbuilt")}
        if hb:
            lines += ["### Against a hand-built OpenVINO loop (same run, same files)", ""]
            rows = []
            for kind, e in hb.items():
                h = e["handbuilt"]
                if "error" in h:
                    rows.append([WORKLOAD_TITLES.get(kind, kind), "error: " + h["error"], "", "", "", "", ""])
                    continue
                rows.append(
                    [
                        WORKLOAD_TITLES.get(kind, kind),
                        _f(h.get("decode_only_frames_per_s"), ".0f"),
                        _f(h.get("decode_only_cpu_ms_per_frame"), ".2f"),
                        _f(h["frames_per_s"], ".0f"),
                        _f(h.get("cpu_ms_per_frame"), ".2f"),
                        _f((e.get("verdict") or {}).get("frames_per_s"), ".0f"),
                        _f((e.get("verdict") or {}).get("ratio_to_handbuilt"), ".2f"),
                    ]
                )
            lines += _table(
                ["workload", "decode alone frames/s", "decode CPU ms/frame", "hand-built frames/s",
                 "hand-built CPU ms/frame", "agent frames/s", "agent / hand-built"],
                rows,
            )
            lines += [
                "Hand-built: OpenCV decode (DCT-reduced for big JPEGs) in a thread pool, one chunk ahead "
                "of the inference, static-batch "
                "OpenVINO with u8 input on an AsyncInferQueue, rows committed with executemany; no EXIF, "
                "de-duplication, rejects or flights. The ratio is what the agent's extra work costs. "
                "Decode alone: the hand-built loop's reads and decodes in the same pool, with no "
                "inference and no database: the ceiling its decoder sets here. On 12 MP JPEGs the "
                "agent's decoder is the same libjpeg-turbo at the same DCT scale, so it binds the agent "
                "too; on PNG tiles the agent's own decoder (agent/png.py) is 2.5x cheaper.",
                "",
            ]
        for kind, e in wl.items():
            runs = (e.get("pipeline") or {}).get("frames_per_s_end_to_end_all")
            if runs:
                lines += [f"{kind}: end-to-end frames/s over {len(runs)} runs: " + ", ".join(f"{r:.0f}" for r in runs), ""]

        th = {k: e["pipeline"]["pipeline_thread_ms_per_frame"] for k, e in wl.items()
              if (e.get("pipeline") or {}).get("pipeline_thread_ms_per_frame")}
        if th:
            lines += ["### Where the agent's time goes (its own per-stage counters)", ""]
            order = ["read", "decode", "classify", "geotag", "commit"]
            seen = {n for t in th.values() for n in t}
            names = [n for n in order if n in seen] + sorted(seen - set(order))
            rows = [[n] + [_f(t.get(n), ".3f") for t in th.values()] for n in names]
            rows.append(["wall ms per frame (end-to-end)"] + [_f(1000 / wl[k]["pipeline"]["frames_per_s_end_to_end"], ".3f") for k in th])
            lines += _table(["thread ms per frame"] + [WORKLOAD_TITLES.get(k, k) for k in th], rows)
            lines += [
                "Read and decode run in a pool of threads, classify/geotag/commit in the commit thread, "
                "so stages overlap: the busiest thread bounds the rate.",
                "",
            ]

        st = {k: e["stages"] for k, e in wl.items() if e.get("stages")}
        if st:
            lines += ["## Time per stage (stages called in turn, one thread)", ""]
            names = ["discover", "read_decode", "classify", "geotag", "commit"]
            rows = []
            for name in names:
                rows.append([name] + [_f(s["stage_ms_per_frame"].get(name), ".3f") for s in st.values()])
            rows.append(["**total**"] + [_f(sum(s["stage_ms_per_frame"].values()), ".3f") for s in st.values()])
            rows.append(["frames/s, one thread"] + [_f(s.get("frames_per_s_sequential"), ".0f") for s in st.values()])
            rows.append(["model compile (s)"] + [_f(s.get("compile_s"), ".2f") for s in st.values()])
            rows.append(["peak RSS (MB)"] + [_f(s.get("peak_rss_mb"), ".0f") for s in st.values()])
            lines += _table(["ms per frame"] + [WORKLOAD_TITLES.get(k, k) for k in st], rows)

        bl = {k: e["baseline_2020"] for k, e in wl.items() if e.get("baseline_2020")}
        if bl:
            lines += ["## The 2020 loop (`cv2.imread`, `cv2.resize`, Keras `model.predict` per image)", ""]
            rows = []
            for kind, b in bl.items():
                if "error" in b:
                    rows.append([kind, "error: " + b["error"], "", "", "", "", ""])
                    continue
                rows.append(
                    [
                        WORKLOAD_TITLES.get(kind, kind),
                        f"{b['frames']} of {b['sample_of']}",
                        _f(b["frames_per_s"], ".1f"),
                        _f(b["read_resize_ms"]["mean"], ".1f"),
                        _f(b["predict_ms"]["mean"], ".1f"),
                        _f(b["predict_ms"]["p95"], ".1f"),
                        _f(b.get("peak_rss_mb"), ".0f"),
                    ]
                )
            lines += _table(
                ["workload", "sample", "frames/s", "read+resize ms", "predict ms (mean)", "predict ms (p95)", "peak RSS MB"],
                rows,
            )
            fb = bl.get("frames") or {}
            note = (
                "The 2020 loop squashes a whole 12 MP frame to one 128x128 input (no tiling), so on (b) it "
                "does 1/48 of the model work skysift does; its rate is per frame on the sample."
            )
            if fb.get("tiled_extrapolated_frames_per_s"):
                note += (
                    f" Doing skysift's work (one predict per tile, {wl['frames']['meta'].get('tiles_per_frame')} "
                    f"tiles) it would manage {fb['tiled_extrapolated_frames_per_s']:.2f} frames/s "
                    "(extrapolated from the measured read and predict times, not run)."
                )
            lines += [note, ""]

    eng = rep.get("engines")
    if eng:
        lines += ["## Per-image inference by engine, device and precision (shared 128x128 tiles)", ""]
        rows = []
        for e in eng:
            if "error" in e:
                r = e["requested"]
                rows.append([r.get("engine", "?"), r.get("device", ""), f"{r.get('precision')} (requested)", "error: " + e["error"]] + [""] * 6)
                continue
            req = e["requested"].get("precision")
            prec = e["precision"] if req in (None, "auto", e["precision"]) else f"{e['precision']} (asked {req})"
            if req == "auto":
                prec += " (auto)"
            b1, bb = e["batch1_ms"], e["batched_ms_per_image"]
            rows.append(
                [
                    e["engine"],
                    e["device"],
                    prec,
                    _f(b1["mean"], ".2f"),
                    _f(b1["p50"], ".2f"),
                    _f(b1["p95"], ".2f"),
                    _f(bb["mean"], ".3f") + f" (min {_f(bb.get('min'), '.3f')}, batch {e['batch_size']})",
                    _f(e["batched_images_per_s"], ".0f"),
                    _f(e["startup_s"], ".1f"),
                    _f(e["peak_rss_mb"], ".0f"),
                ]
            )
        lines += _table(
            ["engine", "device", "precision", "batch-1 mean ms", "p50", "p95", "ms/image batched", "images/s", "start-up s", "RSS MB"],
            rows,
        )
        lines += ["2020 figures on 2-4 vCPU Cascade Lake: OpenVINO 3-6 ms, TensorFlow 66-608 ms per image.", ""]

    sy = rep.get("sync")
    if sy:
        lines += ["## Sync", ""]
        if "markdown" in sy:
            lines += [sy["markdown"], ""]
            extra = []
            if sy.get("rows_speedup"):
                extra.append(f"Speed-up over the 2020 way: rows {sy['rows_speedup']}x, images {sy.get('images_speedup')}x.")
            if sy.get("note"):
                extra.append(sy["note"][0].upper() + sy["note"][1:] + ".")
            if extra:
                lines += [" ".join(extra), ""]
        else:
            lines += ["```", *(f"{k}: {v}" for k, v in sy.items()), "```", ""]
    return "\n".join(lines)
