"""The Prometheus endpoint: scraped over real HTTP, values from events, counters and the DB."""

from __future__ import annotations

import threading
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from util import free_port

from agent.core.config import parse_config
from agent.core.events import EventBus
from agent.core.runtime import AgentContext, Stats
from agent.service.metrics import MetricsServer, parse_listen
from agent.store.db import Store


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[tuple[str, tuple], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def server(tmp_path):
    port = free_port()
    cfg = parse_config(
        {
            "storage": {"dir": str(tmp_path / "data")},
            "metrics": {"listen": f"127.0.0.1:{port}"},
            "sync": {"bigquery": {"project": "p"}},
        }
    )
    store = Store(cfg.db_path)
    store.add_frames(
        [{"frame_id": f"{i:032x}", "flight_id": "f", "source": "s", "status": "classified",
          "label": "undamaged"} for i in range(4)]
    )
    store.mark_failed("bigquery", [f"{0:032x}"], "quota")
    store.close()
    ctx = AgentContext(cfg=cfg, bus=EventBus(), stats=Stats(), stop=threading.Event())
    m = MetricsServer(cfg)
    m.start(ctx)
    yield m, ctx, port
    m.stop()


def test_metrics_from_events_stats_and_database(server):
    m, ctx, port = server
    rows = [
        {"status": "classified", "label": "damaged", "inference_ms": 3.0, "total_ms": 9.0},
        {"status": "classified", "label": "damaged", "inference_ms": 4.0, "total_ms": 11.0},
        {"status": "classified", "label": "undamaged", "inference_ms": 2.0, "total_ms": 6.0},
        {"status": "rejected", "label": None, "reason": "corrupt"},
    ]
    ctx.bus.publish("frames_committed", rows=rows)
    ctx.stats.engine_fallbacks = 1  # counted by the agent, also before the endpoint starts
    ctx.bus.publish("sync_state", target="bigquery", state="down", error="quota")
    ctx.stats.queue_depth = 5
    ctx.stats.frames_dropped = 2
    ctx.stats.engine, ctx.stats.device, ctx.stats.precision = "openvino", "CPU", "f32"
    ctx.stats.paused_reason = "disk full"

    s = scrape(port)
    assert s[("skysift_frames_total", (("label", "damaged"), ("status", "classified")))] == 2
    assert s[("skysift_frames_total", (("label", "undamaged"), ("status", "classified")))] == 1
    assert s[("skysift_frames_total", (("label", ""), ("status", "rejected")))] == 1
    assert s[("skysift_frames_rejected_total", (("reason", "corrupt"),))] == 1
    assert s[("skysift_inference_seconds_count", ())] == 3
    assert s[("skysift_inference_seconds_sum", ())] == pytest.approx(0.009)
    assert s[("skysift_inference_seconds_bucket", (("le", "0.0025"),))] == 1
    assert s[("skysift_engine_fallbacks_total", ())] == 1
    assert s[("skysift_sync_failures_total", (("target", "bigquery"),))] == 1
    assert s[("skysift_link_up", (("target", "bigquery"),))] == 0
    assert s[("skysift_queue_depth", (("queue", "source"),))] == 5
    assert s[("skysift_camera_frames_dropped_total", ())] == 2
    assert s[("skysift_paused", ())] == 1
    assert s[("skysift_engine_info", (("device", "CPU"), ("engine", "openvino"), ("precision", "f32")))] == 1
    # From the real database: 4 frames, none delivered to BigQuery, one failed attempt.
    assert s[("skysift_sync_backlog", (("target", "bigquery"),))] == 4
    assert s[("skysift_sync_failed_frames", (("target", "bigquery"),))] == 1
    assert s[("process_resident_memory_bytes", ())] > 0

    ctx.bus.publish("sync_state", target="bigquery", state="ok", error=None)
    assert scrape(port)[("skysift_link_up", (("target", "bigquery"),))] == 1


def test_stop_releases_the_port(tmp_path):
    port = free_port()
    cfg = parse_config({"storage": {"dir": str(tmp_path)}, "metrics": {"listen": f"127.0.0.1:{port}"}})
    ctx = AgentContext(cfg=cfg, bus=EventBus(), stats=Stats(), stop=threading.Event())
    m = MetricsServer(cfg)
    m.start(ctx)
    assert ("skysift_queue_depth", (("queue", "source"),)) in scrape(port)  # no DB yet: still serves
    m.stop()
    m2 = MetricsServer(cfg)
    m2.start(ctx)  # the port is free again
    m2.stop()


def test_listen_defaults_to_localhost():
    assert parse_listen(":9108") == ("127.0.0.1", 9108)
    assert parse_listen("0.0.0.0:9108") == ("0.0.0.0", 9108)
    assert parse_listen("[::1]:9108") == ("::1", 9108)
    # off unless configured
    assert parse_config({}).metrics.listen is None
