"""The report in a real browser: headless Chromium (Debian's package) driven by Playwright.

`make test` installs Chromium where it is missing and it can (root with apt);
elsewhere these tests skip and say why. The screenshot is kept in
.test-artifacts/report.png for a person to look at.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cuboid_ad.core.workdir import WorkDir
from cuboid_ad.pipeline.views.report import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.real, pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium); `make test` installs it when run as root")]
ARTIFACTS = Path(__file__).resolve().parents[1] / ".test-artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


@pytest.fixture(scope="module")
def page_in_browser(trained_work, tiny_data, tmp_path_factory):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("browser")
    made = report(tiny_data / "test" / "01.mkv", WorkDir(trained_work).models, out, tiny_data / "labels.json", n_gallery=3)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1300})
        seen = {"console": [], "requests": []}
        page.on("console", lambda m: seen["console"].append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: seen["console"].append(f"pageerror: {e}"))
        page.on("request", lambda r: seen["requests"].append(r.url))
        page.goto(made.html.as_uri())
        page.wait_for_load_state("load")
        yield page, made, seen
        browser.close()


def test_page_loads_without_errors_or_outside_requests(page_in_browser):
    page, made, seen = page_in_browser
    assert seen["console"] == []
    folder = made.html.parent.as_uri() + "/"
    assert seen["requests"] and all(u.startswith(folder) for u in seen["requests"]), seen["requests"]
    assert page.locator("#timeline svg").count() == 1 and page.locator("#timeline svg").bounding_box()["height"] > 100
    assert page.locator(".gallery figure").count() == 3


def test_video_plays_and_the_timeline_seeks_it(page_in_browser):
    page, _, seen = page_in_browser
    state = page.evaluate(
        """async () => {
        const v = document.getElementById("video");
        if (v.readyState < 1) await new Promise((ok) => { v.onloadedmetadata = ok; v.onerror = ok; });
        if (v.error) return {error: v.error.code};
        await v.play();
        // wait for playback to pass 0.2 s, however slow the machine (up to 20 s)
        const start = performance.now();
        while (v.currentTime <= 0.2 && !v.ended && performance.now() - start < 20000) {
            await new Promise((ok) => setTimeout(ok, 50));
        }
        return {t: v.currentTime, duration: v.duration, width: v.videoWidth};
    }"""
    )
    assert "error" not in state, f"the video element failed to load: {state}"
    assert state["t"] > 0.2 and abs(state["duration"] - 8.0) < 0.2 and state["width"] == 3 * 96 * 4
    box = page.locator("#timeline").bounding_box()
    geometry = page.evaluate("G")
    x = box["x"] + box["width"] * (geometry["x0"] + 0.75 * (geometry["x1"] - geometry["x0"]))
    page.mouse.click(x, box["y"] + 30)
    page.wait_for_function("document.getElementById('video').paused")
    t = page.evaluate("document.getElementById('video').currentTime")
    assert t == pytest.approx(geometry["t0"] + 0.75 * (geometry["t1"] - geometry["t0"]), abs=0.15)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
    assert seen["console"] == []
