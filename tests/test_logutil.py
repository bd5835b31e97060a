"""LinkLog: first error, rate-limited reminders, one "recovered" line."""

from __future__ import annotations

import logging

from agent.core.logutil import LinkLog


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def test_first_error_then_reminders_then_recovered(caplog):
    clock = Clock()
    log = logging.getLogger("skysift.test.link")
    link = LinkLog(log, "MQTT broker 127.0.0.1:1883", remind_s=60, clock=clock)
    with caplog.at_level(logging.INFO, logger="skysift.test.link"):
        for _ in range(50):  # 50 failures within 49 s: one line
            link.failure(ConnectionRefusedError("connection refused"))
            clock.t += 1
        assert [r.getMessage() for r in caplog.records] == [
            "MQTT broker 127.0.0.1:1883: link down: connection refused"
        ]
        assert link.failing and link.failures == 50
        clock.t = 61
        link.failure(TimeoutError("timed out"))  # past the reminder interval
        clock.t = 70
        link.failure(TimeoutError("timed out"))  # not yet again
        clock.t = 90
        link.success()
        link.success()  # a second success logs nothing
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 3
    assert msgs[1] == "MQTT broker 127.0.0.1:1883: still down after 51 attempts over 61s: timed out"
    assert msgs[2] == "MQTT broker 127.0.0.1:1883: recovered after 52 failed attempts over 90s"
    assert not link.failing
    # A new outage starts a new first line.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="skysift.test.link"):
        link.failure(OSError("network unreachable"))
    assert [r.getMessage() for r in caplog.records] == [
        "MQTT broker 127.0.0.1:1883: link down: network unreachable"
    ]
