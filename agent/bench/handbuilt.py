"""The hand-built reference of `skysift bench` (mode ``handbuilt`` of :mod:`agent.bench.child`).

Only the standard library is imported at module level, as in the child itself.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from agent.bench.protocol import cpu_s, emit, since_spawn_s


def precision_name(t: Any) -> str:
    return {"f32": "f32", "bf16": "bf16", "f16": "f16"}.get(str(t.get_type_name() if hasattr(t, "get_type_name") else t), str(t))


def run(args: dict) -> None:
    """The shortest fast pipeline one would write by hand, as the yardstick for the agent in the
    same run: OpenCV decode (DCT-reduced for big JPEGs) in a thread pool, a static-batch
    OpenVINO model with u8 input on an AsyncInferQueue (THROUGHPUT hint), rows committed with
    ``executemany``. No EXIF, no de-duplication, no rejects, no flights: what the agent adds on
    top of this is what the comparison shows."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import openvino as ov
    import openvino.properties.hint as hints

    from models.card import load_card

    t_start = time.perf_counter()
    card = load_card(args.get("model_path"))
    px = card.input_px
    tile_px = int(args["tile_px"])
    bs = int(args.get("batch_size", 64))
    files = [p for p in sorted(Path(args["root"]).rglob("*")) if p.is_file()]
    precision = args.get("precision", "auto")
    compiled, kind = _compile(card, bs, precision)
    startup_s = time.perf_counter() - t_start

    load = _loader(px, tile_px)
    con = _open_db(Path(args["db"]))
    results: dict[int, np.ndarray] = {}
    queue = ov.AsyncInferQueue(compiled, 0)
    queue.set_callback(lambda req, i: results.__setitem__(i, req.get_output_tensor(0).data.reshape(-1).copy()))
    first_result_s = None
    tiles_per = len(load(files[0])[2]) if files else 1
    chunk = max(1, 1024 // tiles_per)
    t_loop, c_loop = time.perf_counter(), cpu_s()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        # The next chunk decodes while this one is inferred and committed.
        ahead = [pool.submit(load, f) for f in files[:chunk]]
        for i in range(0, len(files), chunk):
            loaded = [f.result() for f in ahead]
            ahead = [pool.submit(load, f) for f in files[i + chunk : i + 2 * chunk]]
            tiles = np.concatenate([t for _, _, t in loaded])
            pad = (-len(tiles)) % bs
            if pad:
                tiles = np.concatenate([tiles, np.zeros((pad, px, px), np.uint8)])
            results.clear()
            for j in range(0, len(tiles), bs):
                queue.start_async({0: tiles[j : j + bs, :, :, None]}, j // bs)
            queue.wait_all()
            p = np.concatenate([results[k] for k in range(len(results))])
            rows, at = [], 0
            for fid, src, t in loaded:
                rows.append((fid, src, float(1 - p[at : at + len(t)].min()), len(t)))
                at += len(t)
            with con:
                con.executemany("INSERT OR IGNORE INTO frames VALUES (?, ?, ?, ?)", rows)
            if first_result_s is None:
                first_result_s = since_spawn_s()
        loop_s = time.perf_counter() - t_loop
        loop_cpu = cpu_s() - c_loop
        # The same reads and decodes with nothing else: the ceiling the decoder alone sets on
        # this machine, measured in the same run (on 12 MP JPEGs it is the binding one).
        decode_s, decode_cpu = _decode_only(pool, load, files, chunk)
    n = con.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
    con.close()
    emit(
        {
            "frames": len(files),
            "rows_in_db": n,
            "tiles_per_frame": tiles_per,
            "precision": precision_name(compiled.get_property(hints.inference_precision))
            if kind != "openvino_int8" else "int8",
            "startup_s": startup_s,
            "first_result_s": first_result_s,
            "loop_s": loop_s,
            "frames_per_s": len(files) / loop_s if loop_s else None,
            "cpu_ms_per_frame": loop_cpu * 1000 / max(len(files), 1),
            "decode_only_frames_per_s": len(files) / decode_s if decode_s else None,
            "decode_only_cpu_ms_per_frame": decode_cpu * 1000 / max(len(files), 1),
        }
    )


def _compile(card: Any, bs: int, precision: str) -> tuple[Any, str]:
    """The card's IR for ``precision`` (as the agent picks it), static batch, u8 input, on CPU."""
    import openvino as ov
    import openvino.properties.hint as hints
    from openvino.preprocess import PrePostProcessor

    from models.openvino_engine import ir_kind

    px = card.input_px
    core = ov.Core()
    kind = ir_kind(card, precision)  # the IR the agent runs for the same model.precision
    model = core.read_model(card.path_for(kind))
    model.reshape({model.input(0).get_any_name(): ov.PartialShape([bs, px, px, 1])})
    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8)
    ppp.input().preprocess().convert_element_type(ov.Type.f32).scale(1 / card.scale)
    config = {hints.performance_mode: hints.PerformanceMode.THROUGHPUT}
    types = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}
    if precision in types:
        config[hints.inference_precision] = types[precision]
    compiled = core.compile_model(ppp.build(), "CPU", config)
    return compiled, kind


def _loader(px: int, tile_px: int) -> Any:
    """A function path -> (frame id, source, tiles): OpenCV decode, DCT-reduced where it can."""
    import hashlib

    import cv2
    import numpy as np

    def starts(n: int) -> list[int]:
        return [0] if n <= px else [i * px for i in range((n - 1) // px)] + [n - px]

    def load(path: Path):
        data = path.read_bytes()
        buf = np.frombuffer(data, np.uint8)
        flag = cv2.IMREAD_GRAYSCALE
        r = 1
        for r_, f in ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4), (2, cv2.IMREAD_REDUCED_GRAYSCALE_2)):
            if tile_px // r_ >= px:
                flag, r = f, r_
                break
        img = cv2.imdecode(buf, flag)
        if tile_px // r != px:
            img = cv2.resize(img, (img.shape[1] * px // (tile_px // r), img.shape[0] * px // (tile_px // r)), interpolation=cv2.INTER_AREA)
        tiles = np.stack([img[y : y + px, x : x + px] for y in starts(img.shape[0]) for x in starts(img.shape[1])])
        return hashlib.sha256(data).hexdigest()[:32], str(path), tiles

    return load


def _open_db(path: Path) -> Any:
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE frames (frame_id TEXT PRIMARY KEY, source TEXT, p_damaged REAL, tiles INT)")
    return con


def _decode_only(pool: Any, load: Any, files: list[Path], chunk: int) -> tuple[float, float]:
    """Wall and CPU seconds of the same reads and decodes with nothing else."""
    t_dec, c_dec = time.perf_counter(), cpu_s()
    for i in range(0, len(files), chunk):
        for _ in pool.map(load, files[i : i + chunk]):
            pass
    return time.perf_counter() - t_dec, cpu_s() - c_dec
