"""One writer per storage directory: an exclusive ``flock`` on ``<storage.dir>/skysift.lock``.

Two agents on one directory fight over everything (the MQTT client id, the retained status,
the files they both read), so the second one must stop before it compiles the model or opens
the database. The lock is an ``flock`` and not a PID file because the kernel releases it when
the holder dies, kill -9 included: a stale file never blocks the next start. The file holds the
holder's PID only so that the refusal can name it; it is never deleted (deleting a lock file
lets two processes lock two different files of the same name).

Read-only commands (``status``, ``flights``, ``frames``, ``report``, ``sync status``) do not
lock: SQLite's WAL lets them read beside the writer.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from pathlib import Path
from types import TracebackType

from agent.core.errors import SkysiftError

log = logging.getLogger(__name__)

LOCK_NAME = "skysift.lock"


class StorageLocked(SkysiftError):
    """Another process (``pid``, None when it could not be read) holds the storage directory."""

    def __init__(self, path: Path, pid: int | None):
        who = f"process {pid}" if pid is not None else "another process (PID unknown)"
        super().__init__(
            f"{path.parent} is in use by {who}: one skysift agent or sync per storage "
            f"directory (the lock is {path})"
        )
        self.path = path
        self.pid = pid


def holder_pid(path: Path) -> int | None:
    """The PID written in the lock file, or None when there is none (yet) or it is unreadable."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class StorageLock:
    """``with StorageLock(dir):`` holds the directory for this process, or raises
    :class:`StorageLocked` at once (``LOCK_NB``: a second agent must fail, not queue)."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / LOCK_NAME
        self._fd: int | None = None
        self.pid_written = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> StorageLock:
        """Take the lock and write our PID into the file; raise :class:`StorageLocked` if held.

        Creates the directory like :class:`agent.store.db.Store` does. An ``OSError`` making
        the directory or the file (a full disk) propagates, so that the caller can wait for room
        as for any other write. Returns ``self``.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC (Python's default): a helper process the agent starts does not inherit
        # the lock and cannot keep it after the agent died.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise StorageLocked(self.path, self._read_holder()) from None
        self._fd = fd
        self.write_pid()
        return self

    def write_pid(self) -> bool:
        """Write our PID into the held lock file; False when the disk has no room for it.

        The lock holds either way (it lives in the kernel, not in the file); without the PID a
        second agent's refusal cannot name us, so call this again once there is room.
        """
        if self._fd is None:
            raise RuntimeError(f"write_pid() without holding {self.path}")
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError as exc:
            log.warning("holding %s, but cannot write our PID into it: %s", self.path, exc)
            self.pid_written = False
        else:
            self.pid_written = True
        return self.pid_written

    def _read_holder(self) -> int | None:
        # The holder writes its PID just after locking: give a start in that window a moment.
        for _ in range(10):
            pid = holder_pid(self.path)
            if pid is not None:
                return pid
            time.sleep(0.05)
        return None

    def release(self) -> None:
        """Give the lock back (closing the file is what releases an ``flock``)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StorageLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
