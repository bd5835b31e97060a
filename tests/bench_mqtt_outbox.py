"""Drain rate of the MQTT outbox: N pending frames, a real Mosquitto, QoS 1 (not a pytest test).

Run from the project root: ``.venv/bin/python tests/bench_mqtt_outbox.py 5000``. Measures the
time from publisher start until every frame is acknowledged by the broker *and* marked
delivered in SQLite, i.e. how fast a backlog empties after the link comes back.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mosquitto import Subscriber, make_broker  # noqa: E402
from mqtt_runner import make_ctx  # noqa: E402

from agent.core.config import parse_config  # noqa: E402
from agent.live.mqtt import MqttPublisher  # noqa: E402
from agent.store.db import Store, wait_for  # noqa: E402


def main(n: int) -> None:
    d = Path(tempfile.mkdtemp(prefix="skysift-mqtt-bench-"))
    broker = make_broker(d / "broker").start()
    try:
        cfg = parse_config({"device_id": "bench", "storage": {"dir": str(d / "data")},
                            "mqtt": {"host": "127.0.0.1", "port": broker.port}})
        store = Store(cfg.db_path)
        store.add_frames([
            {"frame_id": f"{i:032x}", "flight_id": "f", "source": "folder", "status": "classified",
             "label": "damaged" if i % 3 == 0 else "undamaged", "p_damaged": 0.5, "tiles": 1,
             "damaged_tiles": int(i % 3 == 0), "geo_source": "none"}
            for i in range(n)
        ])
        sub = Subscriber(broker, ["skysift/bench/frames"]).start()
        pub = MqttPublisher(cfg)
        t0 = time.perf_counter()
        pub.start(make_ctx(cfg))
        assert wait_for(lambda: store.count_pending("mqtt") == 0, 600, 0.01)
        dt = time.perf_counter() - t0
        sub.wait_for(lambda ms: len(ms) >= n, 60)
        print(f"{n} frames acknowledged and marked in {dt:.2f} s = {n / dt:.0f} msg/s; "
              f"subscriber received {len(sub.messages)}")
        pub.stop()
        sub.stop()
        store.close()
    finally:
        broker.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
