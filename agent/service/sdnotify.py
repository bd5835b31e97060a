"""systemd's sd_notify protocol, and the component that tells systemd how the agent is doing.

The protocol is one datagram per message on the AF_UNIX socket named by ``$NOTIFY_SOCKET``
(a path, or ``@name`` for the abstract namespace), newline-separated ``KEY=value`` lines. It is
small enough to speak directly: no libsystemd binding to install on the drone.

:class:`Notifier` sends ``READY=1`` when it starts (the agent starts components only after the
model is compiled and the source is open), a ``STATUS=`` line with throughput and backlog every
few seconds, ``WATCHDOG=1`` **only while the pipeline is healthy**, and ``STOPPING=1`` on stop.
Healthy means frames made progress since the last ping, or there is nothing to do (the queue is
empty) and every pipeline loop has turned recently (:meth:`agent.core.runtime.Stats.beat`). A timer
that pinged unconditionally would keep a stuck pipeline alive forever; with these rules a frozen
classifier thread, a deadlocked source loop or a SIGSTOPped process stops the pings, and systemd
kills and restarts the service after ``WatchdogSec=``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.core.runtime import AgentContext, Stats

log = logging.getLogger(__name__)


def _address(name: str) -> str | bytes:
    # "@foo" is the abstract namespace: a leading NUL byte on the wire, no file on disk.
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


class SdNotify:
    """A connection to the service manager's notification socket (a no-op without one)."""

    def __init__(self, socket_name: str | None = None):
        name = socket_name if socket_name is not None else os.environ.get("NOTIFY_SOCKET")
        self.socket_name = name or None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        if self.socket_name:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        """Send one message made of ``KEY=value`` lines; return False when it could not go."""
        if self._sock is None:
            return False
        data = "\n".join(lines).encode()
        try:
            with self._lock:
                self._sock.sendto(data, _address(self.socket_name or ""))
        except OSError as exc:
            # Never fatal: systemd may be restarting; the watchdog will notice if this persists.
            log.debug("sd_notify %r failed: %s", data[:40], exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds from ``$WATCHDOG_USEC``, or None when it is off.

    ``$WATCHDOG_PID``, when set, names the process systemd expects the pings from; a child
    process (e.g. a tool started by the agent) that inherited the environment must not ping.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


class PipelineHealth:
    """Decides, at each watchdog tick, whether the pipeline earned a ping.

    - frames were committed since the last tick: healthy;
    - a pipeline loop has not beaten for ``stale_s``: stuck (a frozen or deadlocked thread);
    - frames wait in the queue and nothing was committed for ``stale_s``: stuck (a hung
      inference); less than that: busy with a slow batch, still healthy;
    - otherwise idle (nothing to do, every loop turning): healthy.
    """

    def __init__(self, stats: Stats, stale_s: float, clock=time.monotonic):
        self.stats = stats
        self.stale_s = stale_s
        self._clock = clock
        self._last_progress = stats.last_progress_monotonic
        self._progress_seen_at = clock()
        self.reason = "starting"

    def check(self) -> bool:
        now = self._clock()
        st = self.stats
        progress = st.last_progress_monotonic
        if progress != self._last_progress:
            self._last_progress = progress
            self._progress_seen_at = now
            self.reason = "progress"
            return True
        stale = sorted(n for n, t in dict(st.heartbeats).items() if now - t > self.stale_s)
        if stale:
            self.reason = "stuck: no heartbeat from " + ", ".join(stale)
            return False
        if st.queue_depth > 0:
            waited = now - self._progress_seen_at
            if waited > self.stale_s:
                self.reason = f"stuck: {st.queue_depth} frames queued, none committed for {waited:.0f}s"
                return False
            self.reason = "busy"
            return True
        # Idle: the "nothing committed" clock starts only when work arrives.
        self._progress_seen_at = now
        self.reason = "idle"
        return True


def status_line(stats: Stats, backlog: dict[str, int] | None = None) -> str:
    """The one-line STATUS= shown by ``systemctl status``: throughput, totals, backlog."""
    parts = [
        f"{stats.frames_committed} frames",
        f"{stats.fps():.1f} frames/s",
    ]
    if stats.frames_rejected:
        parts.append(f"{stats.frames_rejected} rejected")
    if stats.engine:
        parts.append(f"{stats.engine}/{stats.device or '?'}")
    if backlog:
        parts.append("backlog " + " ".join(f"{k}={v}" for k, v in sorted(backlog.items())))
    if stats.paused_reason:
        parts.append(f"PAUSED: {stats.paused_reason}")
    return ", ".join(parts)


class Notifier:
    """Component: READY on start, STATUS lines, progress-gated WATCHDOG pings, STOPPING on stop.

    Does nothing (and costs nothing) when the agent does not run under systemd.
    """

    name = "sd_notify"

    def __init__(
        self,
        status_interval_s: float = 5.0,
        socket_name: str | None = None,
        min_stale_s: float = 15.0,
    ):
        self.status_interval_s = status_interval_s
        # The idle commit loop beats every 5 s: a loop counts as stuck only well after that.
        self.min_stale_s = min_stale_s
        self._sd = SdNotify(socket_name)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ctx: AgentContext | None = None
        self.pings = 0

    def start(self, ctx: AgentContext) -> None:
        if not self._sd.enabled:
            return
        self._ctx = ctx
        timeout = watchdog_interval()
        # Ping at half the timeout, as sd_watchdog_enabled(3) recommends.
        tick = min(timeout / 2, self.status_interval_s) if timeout else self.status_interval_s
        health = PipelineHealth(ctx.stats, stale_s=max(timeout / 2 if timeout else 60.0, self.min_stale_s))
        self._sd.ready(status_line(ctx.stats))
        log.info(
            "told systemd READY%s",
            f"; watchdog {timeout:g}s, pings only while the pipeline makes progress" if timeout else "",
        )
        self._thread = threading.Thread(
            target=self._loop, args=(ctx, health, tick, timeout), name="sd-notify", daemon=True
        )
        self._thread.start()

    def _loop(self, ctx: AgentContext, health: PipelineHealth, tick: float, timeout: float | None) -> None:
        from sync import backlog as count_backlog  # imported here to keep start cheap

        last_status = 0.0
        was_healthy = True
        store = None
        while not self._stop.wait(tick):
            try:
                if timeout:
                    healthy = health.check()
                    if healthy:
                        self._sd.watchdog()
                        self.pings += 1
                    if healthy != was_healthy:
                        if healthy:
                            log.warning("pipeline healthy again (%s): watchdog pings resumed", health.reason)
                        else:
                            log.error("pipeline %s: watchdog pings withheld", health.reason)
                        was_healthy = healthy
                now = time.monotonic()
                if now - last_status >= self.status_interval_s:
                    last_status = now
                    backlog = None
                    try:
                        if store is None:
                            store = _open_store(ctx)
                        if store is not None:
                            backlog = count_backlog(ctx.cfg, store)
                    except Exception as exc:  # the DB may be busy or not created yet
                        log.debug("backlog for STATUS unavailable: %s", exc)
                    self._sd.status(status_line(ctx.stats, backlog))
            except Exception:
                log.exception("sd_notify loop failed; continuing")
        if store is not None:
            store.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sd.enabled and self._ctx is not None:
            self._sd.stopping("stopping")
        self._sd.close()


def _open_store(ctx: AgentContext):
    from agent.store.db import Store

    path = ctx.cfg.db_path
    if not path.exists():
        return None
    return Store(path, readonly=True)
