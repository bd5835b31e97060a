"""The HTML damage map in a real headless browser (Debian's ``chromium``).

The browser is driven through the Chrome DevTools Protocol over ``--remote-debugging-pipe``
(no extra package, no debugging port). Every ``Network.requestWillBeSent`` is recorded: a page
that works offline makes requests only to ``file:`` and ``data:`` URLs. Console errors and
Content-Security-Policy refusals are recorded too, since the report's CSP would turn a stray
request into a refusal rather than a request. ``test_leak_detector_*`` prove that both checks
fail on a page that does reach out.

Set ``SKYSIFT_DOCS_SCREENSHOT=1`` to also write docs/report-example.png (the README picture).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from report_data import (
    GPS_FLIGHT,
    MOWER_FLIGHT,
    MOWER_HFOV,
    ZONES,
    gps_photo_rows,
    lawnmower_rows,
    survey_latlon,
)
from util import free_port, stop_pid

from agent.report.build import write_report
from agent.store.db import Store

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """A headless Chromium spoken to over the DevTools pipe (fd 3 in, fd 4 out, NUL-framed JSON)."""

    def __init__(self, binary: str, user_data_dir: Path):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Move chrome's ends above 9 first: were one of them fd 3 or 4 already, bash's
        # redirections below would overwrite it before using it.
        for fd in (to_chrome_r, from_chrome_w):
            high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
            os.close(fd)
            if fd == to_chrome_r:
                to_chrome_r = high
            else:
                from_chrome_w = high
        # bash puts our pipe ends on fds 3 and 4, where --remote-debugging-pipe expects them.
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}', binary, *FLAGS,
             f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(to_chrome_r, from_chrome_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next = 0
        self._cond = threading.Condition()
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._cond.notify_all()
                return
            buf += chunk
            *msgs, buf = buf.split(b"\0")
            with self._cond:
                for raw in msgs:
                    msg = json.loads(raw)
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                self._cond.notify_all()

    def send(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        with self._cond:
            self._next += 1
            mid = self._next
        msg = {"id": mid, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._replies or self.proc.poll() is not None, timeout):
                raise TimeoutError(f"no reply to {method}")
            reply = self._replies.pop(mid, None)
        if reply is None:
            raise RuntimeError(f"chromium exited during {method}")
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, session: str, timeout: float = 30) -> dict:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: any(e["method"] == method and e.get("sessionId") == session for e in self.events), timeout
            )
        if not ok:
            raise TimeoutError(f"no {method} event")
        return next(e for e in self.events if e["method"] == method and e.get("sessionId") == session)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            stop_pid(self.proc)
        os.close(self._to_chrome)
        self._reader.join(timeout=5)
        os.close(self._from_chrome)


class Page:
    """One tab: navigation, evaluation, and what the tab asked of the network and the console."""

    def __init__(self, browser: Browser, width: int = 1280, height: int = 900):
        self.b = browser
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        self.s = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Network", "Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", self.s)
        browser.send("Emulation.setDeviceMetricsOverride", self.s, width=width, height=height,
                     deviceScaleFactor=1, mobile=False)

    def _events(self, method: str) -> list[dict]:
        return [e["params"] for e in list(self.b.events) if e["method"] == method and e.get("sessionId") == self.s]

    def load(self, url: str, ready: str | None = "window.skysiftReport && window.skysiftReport.ready") -> None:
        self.b.send("Page.navigate", self.s, url=url)
        self.b.wait_event("Page.loadEventFired", self.s)
        if ready:
            self.wait_for(ready)

    def eval(self, expr: str):
        res = self.b.send("Runtime.evaluate", self.s, expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expr}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expr: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self.eval(f"!!({expr})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expr} still false; errors: {self.errors()}")
            time.sleep(0.05)

    def next_frame(self) -> None:
        """Let the page draw what it scheduled (two animation frames)."""
        self.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")

    def requested_urls(self) -> list[str]:
        return [p["request"]["url"] for p in self._events("Network.requestWillBeSent")]

    def errors(self) -> list[str]:
        out = [p["exceptionDetails"].get("text", "") + str(p["exceptionDetails"].get("exception", {}).get("description", ""))
               for p in self._events("Runtime.exceptionThrown")]
        out += [" ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
                for p in self._events("Runtime.consoleAPICalled") if p["type"] in ("error", "assert")]
        out += [p["entry"]["text"] for p in self._events("Log.entryAdded") if p["entry"]["level"] == "error"]
        return out

    def offline_violations(self) -> list[str]:
        """Requests that left the file, plus console errors (CSP refusals are logged there)."""
        leaks = [u for u in self.requested_urls() if not u.startswith(("file:", "data:"))]
        return leaks + self.errors()

    def screenshot(self, path: Path, clip_height: int | None = None, scale: float = 1.0) -> None:
        params: dict = {"format": "png"}
        if clip_height:
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": 1280, "height": clip_height, "scale": scale})
        path.write_bytes(base64.b64decode(self.b.send("Page.captureScreenshot", self.s, **params)["data"]))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = _chromium()
    if binary is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    b = Browser(binary, tmp_path_factory.mktemp("chromium-profile"))
    b.send("Target.getTargets")  # the pipe answers: the browser is up
    yield b
    b.close()


@pytest.fixture(scope="module")
def reports(tmp_path_factory, exif_samples, aerial_tiles) -> dict[str, Path]:
    """Two reports from one real database: the geotagged photos, and a 3,000-frame survey."""
    base = tmp_path_factory.mktemp("report-browser")
    images = base / "images"
    images.mkdir()
    store = Store(base / "skysift.db")
    store.add_frames(gps_photo_rows(exif_samples))
    store.add_frames(lawnmower_rows(3000, aerial_tiles, images))
    store.close()
    return {
        "photos": write_report(base / "skysift.db", base / "photos", [GPS_FLIGHT]).html,
        "survey": write_report(base / "skysift.db", base / "survey", [MOWER_FLIGHT], hfov_deg=MOWER_HFOV).html,
    }


def test_gps_photos_report_loads_offline_and_shows_every_frame(browser, reports, tmp_path):
    page = Page(browser)
    url = reports["photos"].as_uri()
    page.load(url)
    assert url in page.requested_urls()  # the recorder sees requests at all
    assert page.offline_violations() == []
    r = page.eval("({m: skysiftReport.markers, u: skysiftReport.unlocated, e: skysiftReport.error,"
                  " dom: document.getElementById('map').dataset.markers,"
                  " rows: document.querySelectorAll('#unloc tbody tr').length})")
    assert r == {"m": 9, "u": 2, "e": None, "dom": "9", "rows": 2}
    thumbs = page.eval("[...document.querySelectorAll('#gallery img')].map(i => [i.complete, i.naturalWidth, i.src.slice(0, 23)])")
    assert len(thumbs) == 6  # 5 geotagged + 1 unlocated damaged photo
    assert all(ok and w > 0 and src == "data:image/jpeg;base64," for ok, w, src in thumbs), thumbs
    page.screenshot(tmp_path / "photos.png")
    assert (tmp_path / "photos.png").stat().st_size > 10_000


def test_survey_of_3000_frames_renders_markers_heat_and_pans(browser, reports, tmp_path):
    page = Page(browser)
    page.load(reports["survey"].as_uri())
    assert page.offline_violations() == []
    assert page.eval("skysiftReport.markers") == 3000 - 12  # 12 GPS dropouts are listed, not drawn
    assert page.eval("skysiftReport.unlocated") == 12
    assert page.eval("skysiftReport.footprints") == 3000 - 12
    page.screenshot(tmp_path / "survey.png")
    assert (tmp_path / "survey.png").stat().st_size > 20_000
    if os.environ.get("SKYSIFT_DOCS_SCREENSHOT"):
        (ROOT / "docs").mkdir(exist_ok=True)
        shot = tmp_path / "docs-full.png"
        page.screenshot(shot, clip_height=1240, scale=0.75)
        # 256 colours keep the README picture small; the map has few distinct colours anyway.
        Image.open(shot).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
            ROOT / "docs" / "report-example.png", optimize=True
        )

    # The heat map is hot over a damaged zone and cold far from it (markers and grid hidden).
    page.eval("for (const id of ['l-mark', 'l-fp', 'l-grid']) document.getElementById(id).click()")
    page.next_frame()
    assert page.eval("skysiftReport.markers") == 0
    pixel = (
        "(([x, y]) => Array.from(document.getElementById('map').getContext('2d')"
        ".getImageData(Math.round(x * devicePixelRatio), Math.round(y * devicePixelRatio), 1, 1).data))"
    )
    for zx, zy, _ in ZONES:
        hot = page.eval(f"{pixel}(skysiftReport.project(%r, %r))" % survey_latlon(zx, zy))
        assert hot[0] > 120 and hot[1] < 100, hot
    cold = page.eval(f"{pixel}(skysiftReport.project(%r, %r))" % survey_latlon(700, 700))  # 1 km from damage
    assert cold[0] > 240 and cold[1] > 240 and cold[2] > 230, cold

    # Real input events: the wheel zooms in around the cursor, a drag pans.
    before = page.eval("skysiftReport.view")
    page.b.send("Input.dispatchMouseEvent", page.s, type="mouseWheel", x=400, y=400, deltaX=0, deltaY=-400)
    page.next_frame()
    zoomed = page.eval("skysiftReport.view")
    assert zoomed["metresPerPixel"] < before["metresPerPixel"] / 1.5
    for kind, x in (("mousePressed", 400), ("mouseMoved", 500), ("mouseReleased", 500)):
        page.b.send("Input.dispatchMouseEvent", page.s, type=kind, x=x, y=400, button="left",
                    buttons=1 if kind != "mouseReleased" else 0, clickCount=1)
    page.next_frame()
    panned = page.eval("skysiftReport.view")
    assert panned["cx"] == pytest.approx(zoomed["cx"] - 100 * zoomed["metresPerPixel"], rel=1e-3)
    assert page.errors() == []


def test_leak_detector_sees_a_request_leaving_the_file(browser, tmp_path):
    port = free_port()  # nothing listens: the request fails, but it was made
    leaky = tmp_path / "leaky.html"
    leaky.write_text(f'<html><body><img src="http://127.0.0.1:{port}/tile.png"></body></html>')
    page = Page(browser)
    page.load(leaky.as_uri(), ready=None)
    assert f"http://127.0.0.1:{port}/tile.png" in page.offline_violations()


def test_leak_detector_sees_a_request_refused_by_the_csp(browser, tmp_path):
    port = free_port()
    leaky = tmp_path / "csp.html"
    leaky.write_text(
        "<html><head><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'\"></head>"
        f'<body><img src="http://127.0.0.1:{port}/tile.png"></body></html>'
    )
    page = Page(browser)
    page.load(leaky.as_uri(), ready=None)
    page.next_frame()
    assert any("Content Security Policy" in v for v in page.offline_violations()), page.offline_violations()

