"""The watched folder: an SD-card dump, or a camera writing files as it flies.

Discovery is inotify (through watchdog) plus a full rescan every ``source.rescan_seconds``,
because watchers miss events (overflowing queues, network file systems, files that were there
before the watch began).

Flights: each first-level subfolder of the root is a flight and takes everything under it
(``root/mission-3/DCIM/100MEDIA/x.jpg`` belongs to flight ``mission-3``). Files directly in the
root belong to a flight named after the root folder itself.

A file is handed over only when complete: renamed into place (rename is atomic, so a writer that
uses a temporary name is done when the final name appears), or unchanged in size and mtime for
``source.settle_seconds``. Hidden names (``.x``) and temporary names (``*.tmp``, ``*.part``,
``*.crdownload``, ``~x``, ``*.swp``), including anything under a hidden folder, are ignored.
Files whose extension is in ``source.ignore_extensions`` (any case: an SD card's ``.SRT`` flight
logs, ``.xmp`` sidecars, ``.LRF`` previews, videos) are never frames: each is skipped with a
DEBUG line, and one INFO line per scan counts them. A complete ``.SRT`` file is handed instead to
``on_track_file`` (path, flight id) when set: the agent reads DJI flight logs as tracks
(:class:`agent.imaging.srt.SrtTracks`). Every file of a scan, logs included, is taken before its
frames are handed over, so a folder's logs are known before its frames are geotagged.

A symlink that resolves outside the root is refused: it is logged and handed over as a frame
marked ``reject='symlink_outside_root'``, so the refusal is visible in the database, and its
target is never read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from agent.core.config import DEFAULT_IGNORE_EXTENSIONS
from drivers.base import Frame, FrameSource, SourceError

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".download", ".swp", ".filepart")
#: flight logs handed to ``on_track_file`` rather than ignored
TRACK_SUFFIXES = (".srt",)


def is_ignored_name(name: str) -> bool:
    """Hidden and temporary names, which a writer uses before the file is complete."""
    low = name.lower()
    return name.startswith((".", "~")) or low.endswith(TEMP_SUFFIXES) or low.endswith("~")


def flight_id_for(name: str) -> str:
    """A flight id safe in topics, object names and file paths, from a folder name."""
    fid = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return fid or "flight"


class FolderSource(FrameSource):
    kind = "folder"
    lossy = False

    def __init__(
        self,
        root: str | Path,
        *,
        settle_seconds: float = 2.0,
        rescan_seconds: float = 30.0,
        use_watcher: bool = True,
        once_wait_s: float | None = None,
        ignore_extensions: Iterable[str] = DEFAULT_IGNORE_EXTENSIONS,
        on_track_file: Callable[[str, str], object] | None = None,
    ):
        super().__init__()
        self.root = Path(root).absolute()
        self.settle_seconds = float(settle_seconds)
        self.rescan_seconds = float(rescan_seconds)
        self.use_watcher = use_watcher
        self.ignore_extensions = frozenset(e.lower() for e in ignore_extensions)
        #: called with (path, flight id) for each complete .SRT file; None: .SRT files are
        #: ignored like the other extensions (or frames, if not listed)
        self.on_track_file = on_track_file
        # --once waits out files still being written, but not forever.
        self.once_wait_s = once_wait_s if once_wait_s is not None else max(30.0, 10 * self.settle_seconds)
        self.root_flight = flight_id_for(self.root.name)
        self._root_prefix = str(self.root).rstrip(os.sep) + os.sep
        self._flight_cache: dict[str, tuple[str, dict]] = {}  # top folder -> _flight_of
        self._real_root: Path | None = None
        # (path, size, mtime_ns) already handed over: a rescan does not re-read unchanged files.
        self._seen: set[tuple[str, int, int]] = set()
        self._refused: set[tuple[str, str]] = set()
        # path -> (signature, monotonic time first seen with it): files waiting to settle
        self._pending: dict[str, tuple[tuple[int, int], float]] = {}
        # path -> monotonic time before which a file that could not be read is not offered again
        self._retry_at: dict[str, float] = {}
        self._events: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._observer = None
        self._flights: set[str] = set()
        self.on_tick: Callable[[], None] | None = None  # the pipeline's liveness heartbeat
        self.discovered = 0  # complete files found so far (the progress bar's total)
        self._ignored: set[str] = set()  # paths skipped by extension: counted once each
        self._unreported: Counter[str] = Counter()  # extension -> newly skipped, for the summary
        self._tracks_taken = 0  # .SRT files handed to on_track_file since the last summary

    # --- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        if not self.root.is_dir():
            raise SourceError(f"source.folder: {self.root} is not a directory")
        self._real_root = self.root.resolve()

    def _start_watcher(self) -> None:
        if not self.use_watcher or self._observer is not None:
            return
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency
            log.warning("watchdog is not installed: relying on rescans every %.0fs", self.rescan_seconds)
            return
        events = self._events

        class _Handler(FileSystemEventHandler):
            # Runs on watchdog's thread: only hand the path over.
            def on_any_event(self, event) -> None:  # type: ignore[no-untyped-def]
                kind = event.event_type
                if kind == "moved":
                    events.put(("moved_dir" if event.is_directory else "moved", os.fsdecode(event.dest_path)))
                elif kind in ("created", "modified", "closed"):
                    events.put(("dir" if event.is_directory else "file", os.fsdecode(event.src_path)))

        observer = Observer()
        observer.daemon = True
        try:
            observer.schedule(_Handler(), str(self.root), recursive=True)
            observer.start()
        except OSError as exc:  # e.g. the inotify watch limit: rescans still find everything
            log.warning("cannot watch %s (%s): relying on rescans every %.0fs", self.root, exc, self.rescan_seconds)
            return
        self._observer = observer

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def flights(self) -> list[str]:
        return sorted(self._flights)

    # --- iteration -------------------------------------------------------------------------------
    def frames(self, stop: threading.Event, once: bool = False) -> Iterator[Frame]:
        if self._real_root is None:
            self.open()
        if not once:
            self._start_watcher()  # before the first scan, so nothing falls between the two
        tick = min(0.25, max(self.settle_seconds / 4, 0.02))
        initial = self._scan(self.root)
        self.discovered += len(initial)
        yield from self._drain(initial, stop)
        next_rescan = time.monotonic() + self.rescan_seconds
        once_deadline = time.monotonic() + self.once_wait_s
        while not stop.is_set():
            if self.on_tick is not None:
                self.on_tick()
            if once:
                if not self._pending:
                    return
                if time.monotonic() > once_deadline:
                    for p in sorted(self._pending):
                        log.warning("%s is still being written: skipped in this --once run", p)
                    return
            ready: list[Frame] = []
            try:
                kind, path = self._events.get(timeout=tick)
                ready.extend(self._on_event(kind, path))
                while True:  # take every queued event before looking at the pending files
                    kind, path = self._events.get_nowait()
                    ready.extend(self._on_event(kind, path))
            except queue.Empty:
                pass
            if not once and time.monotonic() >= next_rescan:
                ready.extend(self._scan(self.root))
                next_rescan = time.monotonic() + self.rescan_seconds
            ready.extend(self._settled())
            ready.extend(self._retries_due())
            self._report_skipped()
            self.discovered += len(ready)
            yield from self._drain(ready, stop)

    def _drain(self, frames: list[Frame], stop: threading.Event) -> Iterator[Frame]:
        for f in frames:
            if stop.is_set():
                return
            yield f

    def _on_event(self, kind: str, path: str) -> list[Frame]:
        if kind in ("dir", "moved_dir"):
            # A folder moved in brings files that raise no events of their own.
            return self._scan(Path(path)) if os.path.isdir(path) else []
        return self._consider(path, renamed=(kind == "moved"))

    def _scan(self, top: Path) -> list[Frame]:
        out: list[Frame] = []
        stack = [str(top)]
        while stack:
            d = stack.pop()
            try:
                entries = list(os.scandir(d))
            except OSError as exc:
                log.warning("cannot list %s: %s", d, exc.strerror or exc)
                continue
            entries.sort(key=lambda e: e.name)
            for e in entries:
                if is_ignored_name(e.name):
                    continue
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                        continue
                except OSError:
                    continue
                out.extend(self._consider(e.path, renamed=False))
        self._report_skipped()
        return out

    def _report_skipped(self) -> None:
        """One INFO line for the files skipped by extension (and logs read) since the last one."""
        if not self._unreported and not self._tracks_taken:
            return
        n = sum(self._unreported.values())
        kinds = ", ".join(f"{ext} {c}" for ext, c in sorted(self._unreported.items()))
        log.info(
            "%s: %d files that are not frames skipped (%s); %d flight logs (.SRT) read",
            self.root, n, kinds or "none", self._tracks_taken,
        )
        self._unreported.clear()
        self._tracks_taken = 0

    def _skip_by_extension(self, path: str, ext: str) -> bool:
        """Whether ``path`` is never a frame; a first sight is logged (DEBUG) and counted."""
        if ext not in self.ignore_extensions:
            return False
        if path not in self._ignored:
            self._ignored.add(path)
            self._unreported[ext] += 1
            log.debug("%s: not a frame (%s), skipped", path, ext)
        self._pending.pop(path, None)
        return True

    def _settled(self) -> list[Frame]:
        out: list[Frame] = []
        for path in list(self._pending):
            out.extend(self._consider(path, renamed=False))
        return out

    def _retries_due(self) -> list[Frame]:
        out: list[Frame] = []
        now = time.monotonic()
        for path in [p for p, at in self._retry_at.items() if at <= now]:
            del self._retry_at[path]
            out.extend(self._consider(path, renamed=False))
        return out

    def _consider(self, path: str, *, renamed: bool) -> list[Frame]:
        """Hand the file over if it is complete and new; else remember it as pending."""
        if path in self._retry_at:
            return []  # waits for its retry time (rescans and events must not bypass the backoff)
        # Plain string work: in a backfill this runs for every file, and pathlib's parsing
        # cost more than the rest of it together (skysift bench, tiles).
        root = self._root_prefix
        if not path.startswith(root):
            return []
        parts = path[len(root) :].split(os.sep)
        if any(is_ignored_name(part) for part in parts):
            self._pending.pop(path, None)
            return []
        ext = os.path.splitext(parts[-1])[1].lower()
        is_track = ext in TRACK_SUFFIXES and self.on_track_file is not None
        if not is_track and self._skip_by_extension(path, ext):
            return []
        try:
            lst = os.lstat(path)
        except FileNotFoundError:
            self._pending.pop(path, None)  # renamed or deleted before it settled
            return []
        except OSError as exc:
            log.warning("cannot stat %s: %s", path, exc.strerror or exc)
            return []
        flight_id, fmeta = self._flight_of(parts)
        p = Path(path)
        if stat.S_ISLNK(lst.st_mode):
            target = os.path.realpath(path)
            assert self._real_root is not None
            if not (target == str(self._real_root) or target.startswith(str(self._real_root) + os.sep)):
                return self._refuse(path, target, flight_id, fmeta)
            try:
                st = os.stat(path)
            except OSError:
                return []  # dangling link
        else:
            st = lst
        if not stat.S_ISREG(st.st_mode):
            return []
        sig = (st.st_size, st.st_mtime_ns)
        key3 = (path, *sig)
        if key3 in self._seen:
            self._pending.pop(path, None)
            return []
        now = time.monotonic()
        prev = self._pending.get(path)
        if renamed:
            ready = True
        elif prev is None or prev[0] != sig:
            # First sight of this version. A file whose mtime is already older than the settle
            # time has not been written for that long (a backfill): no need to watch it again.
            ready = time.time() - st.st_mtime_ns / 1e9 >= self.settle_seconds and prev is None
            if not ready:
                self._pending[path] = (sig, now)
        else:
            ready = now - prev[1] >= self.settle_seconds
        if not ready:
            return []
        self._pending.pop(path, None)
        self._seen.add(key3)
        if is_track:
            assert self.on_track_file is not None
            self.on_track_file(path, flight_id)
            self._tracks_taken += 1
            return []
        self._flights.add(flight_id)
        return [
            Frame(
                flight_id=flight_id,
                source=path,
                path=p,
                meta={"size": st.st_size, "mtime_ns": st.st_mtime_ns, **fmeta},
            )
        ]

    def _refuse(self, path: str, target: str, flight_id: str, fmeta: dict) -> list[Frame]:
        """A symlink out of the root: handed over once as a rejected frame, never read."""
        key = (path, target)
        if key in self._refused:
            return []
        self._refused.add(key)
        log.warning("refused %s: symlink to %s, outside %s", path, target, self.root)
        self._flights.add(flight_id)
        digest = hashlib.sha256(f"symlink:{path}->{target}".encode()).hexdigest()
        return [
            Frame(
                flight_id=flight_id,
                source=path,
                path=Path(path),
                meta={
                    "reject": "symlink_outside_root",
                    "reject_message": f"symlink to {target}, outside the watched folder",
                    "frame_id": digest[:32],
                    **fmeta,
                },
            )
        ]

    def _flight_of(self, parts: list[str]) -> tuple[str, dict]:
        """(flight_id, meta) of a file whose path under the root has these ``parts``."""
        top = parts[0] if len(parts) > 1 else ""
        known = self._flight_cache.get(top)
        if known is not None:
            return known
        if not top:
            known = self.root_flight, {
                "root_level": True, "flight_name": self.root.name, "flight_source": str(self.root)
            }
        else:
            known = flight_id_for(top), {
                "root_level": False, "flight_name": top, "flight_source": str(self.root / top)
            }
        self._flight_cache[top] = known
        return known

    def forget(self, frame: Frame) -> None:
        """Let a rescan hand ``frame`` over again (it changed while it was being read)."""
        if frame.path is not None and "size" in frame.meta:
            self._seen.discard((str(frame.path), frame.meta["size"], frame.meta["mtime_ns"]))

    def retry_later(self, frame: Frame, delay_s: float) -> None:
        """Hand ``frame`` over again in ``delay_s`` (it could not be read; in --once mode, on
        the next start)."""
        self.forget(frame)
        if frame.path is not None:
            self._retry_at[str(frame.path)] = time.monotonic() + delay_s

