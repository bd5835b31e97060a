"""The small thread pool the decode thread reads and decodes big frames in."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Workers:
    """Maps a function over a batch: in the pool for big files, in the calling thread for small.

    Small files (the 14 KB tiles) take ~0.1 ms each to read and decode: handing them to other
    threads costs more in GIL hand-overs than it wins, and the model's own threads need the
    cores (skysift bench, tiles: 1 pool thread ~10 % faster than 2, 3 ~20 % slower). Big ones
    (a 12 MP JPEG takes ~40 ms) need every core; decoders release the GIL.
    """

    #: files up to this size on average are read and decoded in the calling thread itself
    INLINE_BYTES = 64 * 1024

    def __init__(self, count: int | None = None):
        self.count = count or min(4, max(2, os.cpu_count() or 2))
        self.pool = ThreadPoolExecutor(max_workers=self.count, thread_name_prefix="ingest-read")

    def map(self, fn: Callable[[T], R], items: list[T], sizes: list[int | None]) -> list[R]:
        """``fn`` over ``items`` in order: one pool task per worker rather than per item (a
        future per 128 px tile cost as much as reading it), or right here for small files."""
        n = len(items)
        known = [s for s in sizes if s is not None]
        if n <= 1 or (known and sum(known) <= self.INLINE_BYTES * len(known)):
            return [fn(x) for x in items]
        k = min(self.count, n)
        bounds = [n * i // k for i in range(k + 1)]
        chunks = [items[bounds[i] : bounds[i + 1]] for i in range(k)]
        out: list[R] = []
        for part in self.pool.map(lambda chunk: [fn(x) for x in chunk], chunks):
            out.extend(part)
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=True)
