"""Optional Prometheus endpoint (``metrics.listen``), fed from the event bus and the counters.

Off by default. A bare port or ``:port`` listens on 127.0.0.1 only: the endpoint has no
authentication, so exposing it beyond the host is an explicit choice (``0.0.0.0:9108``),
logged as a warning.

Counters that events drive (frames, fallbacks, sync failures) live in a registry private to this
component; values that already exist elsewhere (queue depth, dropped camera frames, backlog in
the database) are read at scrape time by a collector, so they can never drift from the truth.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agent.core.config import Config
    from agent.core.runtime import AgentContext

log = logging.getLogger(__name__)

# Per-frame inference ranges from ~1 ms (one 128 px tile on OpenVINO) to seconds (a large
# frame cut into hundreds of tiles on TensorFlow CPU).
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class _LiveCollector(Collector):
    """Gauges read from the running agent and the database at each scrape."""

    def __init__(self, owner: MetricsServer):
        self.owner = owner

    def collect(self):
        ctx = self.owner.ctx
        if ctx is None:
            return
        st = ctx.stats
        q = GaugeMetricFamily("skysift_queue_depth", "Frames waiting in a pipeline queue", labels=["queue"])
        q.add_metric(["source"], st.queue_depth)
        for name, depth in dict(st.queue_depths).items():
            q.add_metric([str(name)], float(depth))
        yield q
        d = CounterMetricFamily(
            "skysift_camera_frames_dropped",
            "Live camera frames dropped: the pipeline was full or ingest paused for room",
        )
        d.add_metric([], st.frames_dropped)
        yield d
        # From the agent's counter, not from events: a fallback while the engine is built
        # happens before this endpoint starts, and must still show.
        fb = CounterMetricFamily("skysift_engine_fallbacks", "Fallbacks from one inference engine to another")
        fb.add_metric([], st.engine_fallbacks)
        yield fb
        yield GaugeMetricFamily("skysift_paused", "1 while ingest is paused (disk full)", value=int(bool(st.paused_reason)))
        yield GaugeMetricFamily("skysift_frames_per_second", "Frames committed per second, last 60 s", value=st.fps(60.0))
        info = GaugeMetricFamily(
            "skysift_engine_info", "Inference engine in use", labels=["engine", "device", "precision"]
        )
        info.add_metric([st.engine or "", st.device or "", st.precision or ""], 1)
        yield info
        backlog, failed = self.owner.db_counts()
        b = GaugeMetricFamily("skysift_sync_backlog", "Frames not yet delivered, per target", labels=["target"])
        for target, n in sorted(backlog.items()):
            b.add_metric([target], n)
        yield b
        f = GaugeMetricFamily(
            "skysift_sync_failed_frames", "Frames whose last delivery attempt failed", labels=["target"]
        )
        for target, n in sorted(failed.items()):
            f.add_metric([target], n)
        yield f
        up = GaugeMetricFamily("skysift_link_up", "1 when the link to a target works", labels=["target"])
        for target, state in sorted(self.owner.links.items()):
            up.add_metric([target], 1 if state == "ok" else 0)
        yield up


class MetricsServer:
    """Component: serves /metrics on ``metrics.listen`` while the agent runs."""

    name = "metrics"

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.ctx: AgentContext | None = None
        self.registry = CollectorRegistry()
        self.frames = Counter(
            "skysift_frames", "Frames committed", ["status", "label"], registry=self.registry
        )
        self.rejected = Counter(
            "skysift_frames_rejected", "Rejected frames by reason", ["reason"], registry=self.registry
        )
        self.inference = Histogram(
            "skysift_inference_seconds",
            "Model inference time per frame (all its tiles)",
            buckets=INFERENCE_BUCKETS,
            registry=self.registry,
        )
        self.frame_total = Histogram(
            "skysift_frame_seconds",
            "Time per frame from read to commit",
            buckets=INFERENCE_BUCKETS,
            registry=self.registry,
        )
        self.sync_failures = Counter(
            "skysift_sync_failures", "Failed sync attempts per target", ["target"], registry=self.registry
        )
        self.links: dict[str, str] = {}
        self.registry.register(_LiveCollector(self))
        # Memory, CPU time, open files of the agent process; Python version.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._local = threading.local()

    # --- event handlers (publisher's thread: only bump counters) ---------------------------------
    def _on_frames(self, rows: list[dict[str, Any]], **_: Any) -> None:
        for r in rows:
            self.frames.labels(status=r.get("status") or "", label=r.get("label") or "").inc()
            if r.get("status") == "rejected":
                self.rejected.labels(reason=r.get("reason") or "unknown").inc()
            if r.get("inference_ms") is not None:
                self.inference.observe(float(r["inference_ms"]) / 1000.0)
            if r.get("total_ms") is not None:
                self.frame_total.observe(float(r["total_ms"]) / 1000.0)

    def _on_sync_state(self, target: str, state: str, **_: Any) -> None:
        self.links[target] = state
        if state != "ok":
            self.sync_failures.labels(target=target).inc()

    def db_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """Backlog and failed deliveries per target, read from the database (scrape thread)."""
        from agent.store.db import Store
        from sync import backlog

        path = self.cfg.db_path
        if not path.exists():
            return {}, {}
        store = Store(path, readonly=True)  # per scrape: the HTTP server's threads come and go
        try:
            counts = backlog(self.cfg, store)
            failed = {
                r[0]: r[1]
                for r in store.db.execute(
                    "SELECT target, COUNT(*) FROM deliveries WHERE state = 'failed' GROUP BY target"
                )
            }
        except Exception as exc:  # a busy or half-migrated DB must not break the scrape
            log.debug("metrics: database counts unavailable: %s", exc)
            return {}, {}
        finally:
            store.close()
        return counts, failed

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, ctx: AgentContext) -> None:
        from prometheus_client import start_http_server

        self.ctx = ctx
        ctx.bus.subscribe("frames_committed", self._on_frames)
        ctx.bus.subscribe("sync_state", self._on_sync_state)
        host, port = parse_listen(self.cfg.metrics.listen or "")
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("metrics endpoint on %s:%d is reachable from the network (no authentication)", host, port)
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        log.info("Prometheus metrics on http://%s:%d/metrics", host, port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
