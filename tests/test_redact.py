"""redact_url: the password of a URL never reaches a log line or a stored row."""

from __future__ import annotations

import pytest

from agent.core import redact_url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the user name stays (which account), the password goes
        ("rtsp://admin:s3cret@10.0.0.2:554/stream1", "rtsp://admin:***@10.0.0.2:554/stream1"),
        ("http://op:pa%40ss@cam.local/mjpg", "http://op:***@cam.local/mjpg"),
        # a raw "@" in the password: the host starts after the last one
        ("rtsp://admin:p@ss@host/x", "rtsp://admin:***@host/x"),
        # user info without a colon is a token: all of it goes
        ("https://tok123@host/a", "https://***@host/a"),
        ("rtsp://:pw@h/", "rtsp://:***@h/"),
        # an "@" in the path is not user info
        ("http://host/a@b", "http://host/a@b"),
        # secrets some IP cameras take as query parameters
        ("http://cam/v.cgi?user=admin&pwd=pw1&res=1", "http://cam/v.cgi?user=admin&pwd=***&res=1"),
        ("http://cam/v?Password=x#f", "http://cam/v?Password=***#f"),
        # a URL inside a message
        ("camera rtsp://u:pw@h/c: link down", "camera rtsp://u:***@h/c: link down"),
    ],
)
def test_redacts(text: str, expected: str) -> None:
    assert redact_url(text) == expected


@pytest.mark.parametrize("text", ["rtsp://10.0.0.2/cam", "/data/flight.mp4", "0", "/dev/video0", ""])
def test_leaves_text_without_secrets_alone(text: str) -> None:
    assert redact_url(text) == text


def test_config_check_shows_the_camera_without_its_password(tmp_path, capsys) -> None:
    from agent.cli.main import main

    cfg = tmp_path / "skysift.yaml"
    cfg.write_text(f"source:\n  camera: rtsp://admin:s3cret@10.0.0.2/cam\nstorage:\n  dir: {tmp_path / 'd'}\n")
    assert main(["config", "check", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "source=camera rtsp://admin:***@10.0.0.2/cam" in out and "s3cret" not in out
