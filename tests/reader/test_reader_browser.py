"""End to end in a real browser: Playwright drives headless Chromium (Debian's ``chromium``).

Skipped cleanly when Playwright or the browser is not installed.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from reader_helpers import make_study

from synthmed.reader.app import create_app, study_links
from synthmed.reader.render import plane_stack
from synthmed.reader.study import Study

CHROMIUM = shutil.which("chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` executable on PATH")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Path, Study, dict[str, Any]]]:
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    root = make_study(tmp_path, 3, n_real=2, n_synthetic=2, readers=2, size=16)
    app = create_app(root)
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    study = app.extensions["synthmed_reader"]["study"]
    try:
        yield root, study, study_links(study, f"http://127.0.0.1:{srv.server_port}")
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def _canvas_pixels(page: Any, plane: str) -> np.ndarray:
    data = page.evaluate("""(plane) => {
        const c = document.querySelector(`figure[data-plane="${plane}"] canvas`);
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height);
        return {w: c.width, h: c.height, px: Array.from(d.data)};
    }""", plane)
    rgba = np.asarray(data["px"], dtype=np.uint8).reshape(data["h"], data["w"], 4)
    return rgba[..., 0]


def _box(page: Any, selector: str) -> dict[str, float]:
    return page.eval_on_selector(selector, "e => e.getBoundingClientRect().toJSON()")


def _windowed(pixels: np.ndarray, width: int, level: int) -> np.ndarray:
    """What the page's window/level shows for 8-bit ``pixels`` (JavaScript's Math.round: half up)."""
    low = level - width / 2
    return np.clip(np.floor((pixels.astype(np.float64) - low) * 256 / width + 0.5), 0, 255).astype(np.uint8)


def _db(root: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(root / "answers.sqlite") as con:
        return con.execute("SELECT reader, position, item, answer, confidence, elapsed_ms FROM answers "
                           "ORDER BY position").fetchall()


def test_reading_in_chromium(live: tuple[Path, Study, dict[str, Any]]) -> None:
    root, study, links = live
    order = study.orders["reader-1"]
    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            ctx = browser.new_context(viewport={"width": 1280, "height": 800})
            page = ctx.new_page()
            page.set_default_timeout(15_000)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(links["readers"]["reader-1"])
            page.wait_for_selector("body.ready")  # all three mosaics loaded, buttons enabled
            assert page.inner_text("#progress-text") == "Image 1 of 4"
            assert page.locator("figure.plane canvas").count() == 3
            # the canvases show exactly the study's pixels, middle slice first
            image = study.image(order[0])
            for plane in ("axial", "coronal", "sagittal"):
                np.testing.assert_array_equal(_canvas_pixels(page, plane), plane_stack(image, plane)[7])
            # keyboard and wheel scroll through slices
            page.keyboard.press("ArrowUp")
            assert page.get_attribute('figure[data-plane="axial"] canvas', "data-slice") == "8"
            np.testing.assert_array_equal(_canvas_pixels(page, "axial"), plane_stack(image, "axial")[8])
            page.hover('figure[data-plane="coronal"] canvas')
            page.mouse.wheel(0, -100)
            page.wait_for_function(
                "document.querySelector('figure[data-plane=\"coronal\"] canvas').dataset.slice === '8'")
            assert "active" in (page.get_attribute('figure[data-plane="coronal"]', "class") or "")
            page.keyboard.press("PageDown")  # acts on the selected (coronal) plane
            assert page.get_attribute('figure[data-plane="coronal"] canvas', "data-slice") == "3"
            # orientation: stated on the page, and the edges of each view are labelled
            assert "radiological" in page.inner_text("#orientation")
            assert page.inner_text('figure[data-plane="sagittal"] .edge.left') == "A"
            assert page.inner_text('figure[data-plane="axial"] .edge.left') == "R"
            # zoom: "fit" fills the width with the three planes side by side (320 px each before)
            boxes = [_box(page, f'figure[data-plane="{p}"] canvas') for p in ("axial", "coronal", "sagittal")]
            assert all(b["width"] > 330 for b in boxes) and len({round(b["top"]) for b in boxes}) == 1
            assert _box(page, 'figure[data-plane="sagittal"]')["right"] <= 1280
            page.click('#toolbar button[data-zoom="2"]')  # 2x: two CSS pixels per voxel (16 voxels)
            assert _box(page, 'figure[data-plane="axial"] canvas')["width"] == 32
            page.keyboard.press("+")
            assert _box(page, 'figure[data-plane="axial"] canvas')["width"] == 48
            page.keyboard.press("-")
            assert page.get_attribute("#viewer", "data-zoom") == "2"
            # window / level: keys and dragging change the drawn grey values, not the stored image
            page.keyboard.press("c")  # more contrast: W 256 -> 205
            assert page.get_attribute("#viewer", "data-window") == "205 128"
            np.testing.assert_array_equal(_canvas_pixels(page, "axial"),
                                          _windowed(plane_stack(image, "axial")[8], 205, 128))
            b = _box(page, 'figure[data-plane="axial"] canvas')
            page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
            page.mouse.down()
            page.mouse.move(b["x"] + b["width"] / 2 + 30, b["y"] + b["height"] / 2 - 20, steps=4)
            page.mouse.up()
            assert page.get_attribute("#viewer", "data-window") == "235 108"  # wider window, brighter
            np.testing.assert_array_equal(_canvas_pixels(page, "coronal"),
                                          _windowed(plane_stack(image, "coronal")[3], 235, 108))
            assert page.get_attribute('figure[data-plane="axial"] canvas', "data-slice") == "8"  # unchanged
            # confidence 4, then R answers "real"; the next image appears only after the answer is stored
            page.keyboard.press("4")
            assert page.is_checked('input[name=confidence][value="4"]')
            with page.expect_navigation():
                page.keyboard.press("r")
            page.wait_for_selector("body.ready")
            assert page.inner_text("#progress-text") == "Image 2 of 4"
            rows = _db(root)
            assert rows[0][:5] == ("reader-1", 0, order[0], "real", 4) and rows[0][5] is not None
            # zoom and window/level stay as set for the next image; 0 resets both
            assert page.get_attribute("#viewer", "data-zoom") == "2"
            assert page.get_attribute("#viewer", "data-window") == "235 108"
            page.keyboard.press("0")
            assert page.get_attribute("#viewer", "data-window") == "256 128"
            assert _box(page, 'figure[data-plane="axial"] canvas')["width"] > 330
            np.testing.assert_array_equal(_canvas_pixels(page, "sagittal"),
                                          plane_stack(study.image(order[1]), "sagittal")[7])
            ctx.close()  # the reader closes the browser ...

            ctx = browser.new_context()  # ... and comes back later with a fresh profile
            page = ctx.new_page()
            page.set_default_timeout(15_000)
            page.goto(links["readers"]["reader-1"])
            page.wait_for_selector("body.ready")
            assert page.inner_text("#progress-text") == "Image 2 of 4"
            with page.expect_navigation():
                page.click("#answer-synthetic")
            for k in (2, 3):
                page.wait_for_selector("body.ready")
                assert page.inner_text("#progress-text") == f"Image {k + 1} of 4"
                with page.expect_navigation():
                    page.keyboard.press("s")
            assert "All 4 images are answered" in page.inner_text("#done")
            assert [(r[1], r[2], r[3]) for r in _db(root)] == [
                (0, order[0], "real"), (1, order[1], "synthetic"), (2, order[2], "synthetic"),
                (3, order[3], "synthetic")]

            page.goto(links["admin"])
            assert "4 / 4" in page.inner_text("table") and "0 / 4" in page.inner_text("table")
            assert page.get_attribute("#export-csv", "href", timeout=5000).endswith("/answers.csv")
            ctx.close()
        finally:
            browser.close()
    assert not problems, problems  # no script errors, no CSP violations
