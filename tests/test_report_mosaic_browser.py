"""The mosaic and the basemap in headless Chromium (the browser driver of test_report_browser):
each frame's picture where the pipeline put its corners, damaged tiles outlined by the card's
threshold, the basemap's colour around them, no request leaving the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_data import (
    GROUND_CENTRES,
    GROUND_COLOURS,
    GROUND_YAWS,
    ground_corners_xy,
    ground_lonlat,
    ground_rows,
    write_mbtiles,
)
from test_report_browser import (
    Page,
    browser,  # noqa: F401  (its Chromium fixture, used here too)
)

from agent.report.build import write_report
from agent.store.db import Store

BASEMAP_RGB = (200, 90, 200)
BACKGROUND_RGB = (251, 251, 248)  # the page's empty-map colour


@pytest.fixture(scope="module")
def ground_report(tmp_path_factory) -> Path:
    """Three frames placed by the pipeline on the ground (solid-colour pictures), over a basemap."""
    base = tmp_path_factory.mktemp("report-ground")
    images = base / "images"
    images.mkdir()
    store = Store(base / "skysift.db")
    store.add_frames(ground_rows(images))
    store.close()
    mbtiles = base / "base.mbtiles"
    write_mbtiles(mbtiles, (36.14, 36.20, 36.16, 36.22), range(14, 19), rgb=BASEMAP_RGB)
    return write_report(base / "skysift.db", base / "out", threshold=0.6, basemap=mbtiles).html


def _pixel(page: Page, east: float, north: float) -> list[int]:
    lon, lat = ground_lonlat(east, north)
    return page.eval(
        f"(([x, y]) => Array.from(document.getElementById('map').getContext('2d').getImageData("
        f"Math.round(x * devicePixelRatio), Math.round(y * devicePixelRatio), 1, 1).data))"
        f"(skysiftReport.project({lat!r}, {lon!r}))"
    )[:3]


def _near(rgb: list[int], want: tuple[int, int, int], tol: int = 14) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(rgb, want, strict=True))


def _on_frame(k: int, s: float, t: float) -> tuple[float, float]:
    """Ground point at fraction ``s`` across and ``t`` down frame ``k``'s picture."""
    tl, tr, br, bl = ground_corners_xy(*GROUND_CENTRES[k], GROUND_YAWS[k])
    top = [tl[i] + (tr[i] - tl[i]) * s for i in (0, 1)]
    bottom = [bl[i] + (br[i] - bl[i]) * s for i in (0, 1)]
    return top[0] + (bottom[0] - top[0]) * t, top[1] + (bottom[1] - top[1]) * t


def test_mosaic_draws_each_picture_on_its_footprint_over_the_basemap(browser, ground_report, tmp_path):  # noqa: F811
    page = Page(browser)
    page.load(ground_report.as_uri())
    page.wait_for("skysiftReport.imagesLoaded === skysiftReport.images && skysiftReport.images > 0")
    page.eval("for (const id of ['l-heat', 'l-mark', 'l-grid']) document.getElementById(id).click()")
    page.next_frame()
    assert page.offline_violations() == []
    state = page.eval("({d: skysiftReport.drawn, m: skysiftReport.mosaic, b: skysiftReport.basemapDrawn,"
                      " g: skysiftReport.onGround, e: skysiftReport.error})")
    assert state["d"] == state["m"] == 3 and state["b"] > 0 and state["g"] == 3 and state["e"] is None
    for k, rgb in enumerate(GROUND_COLOURS):
        # inside undamaged tiles: the frame's own colour, where the pipeline put its corners
        for s, t in ((0.8, 0.85), (0.1, 0.15), (0.6, 0.5)):
            assert _near(_pixel(page, *_on_frame(k, s, t)), rgb), (k, s, t, _pixel(page, *_on_frame(k, s, t)))
        # tile (1, 1) is damaged: outlined in red on the ground; tile (0, 3) at p 0.55 is not (threshold 0.6)
        edge = _pixel(page, *_on_frame(k, 0.25, 0.5))
        assert edge[0] > 170 and edge[1] < 110 and edge[2] < 110, edge
        assert _near(_pixel(page, *_on_frame(k, 0.75, 1 / 6)), rgb)
    # between and around the frames: the basemap, not the drone's position (50 m south)
    assert _near(_pixel(page, 0, -45), BASEMAP_RGB)
    text = page.eval("document.getElementById('placement').textContent + ' | ' + document.getElementById('basenote').textContent")
    assert "3 of 5 frames on the map are placed on the ground" in text and "1 no pose, 1 ray missed" in text
    assert "basemap base.mbtiles: zoom 18" in text
    page.screenshot(tmp_path / "mosaic.png")
    assert (tmp_path / "mosaic.png").stat().st_size > 20_000
    page.eval("document.getElementById('l-base').click()")
    page.next_frame()
    assert _near(_pixel(page, 0, -45), BACKGROUND_RGB, 3) and page.eval("skysiftReport.basemapDrawn") == 0


def test_page_without_any_position_says_why(browser, tmp_path):  # noqa: F811
    images = tmp_path / "images"
    images.mkdir()
    store = Store(tmp_path / "skysift.db")
    store.add_frames(ground_rows(images)[-1:])
    store.close()
    page = Page(browser)
    page.load(write_report(tmp_path / "skysift.db", tmp_path / "out", threshold=0.5).html.as_uri())
    assert page.offline_violations() == []
    r = page.eval("({shown: getComputedStyle(document.getElementById('nomap')).display,"
                  " text: document.getElementById('nomap').textContent,"
                  " why: [...document.querySelectorAll('#unloc tbody td')].map(td => td.textContent)})")
    assert r["shown"] == "block" and "No frame can be placed on the map" in r["text"]
    assert "no position" in r["why"]
    page.screenshot(tmp_path / "nomap.png")
