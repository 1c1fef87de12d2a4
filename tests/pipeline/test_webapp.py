"""`serve` (issue 21): the web app's API in-process (Starlette's test client), and the pages in a
real browser (Playwright with Debian's chromium) against a real uvicorn server on loopback."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from bench.watch import free_port
from cuboid_ad.pipeline.views.webapp import make_app, safe_name

DEADLINE_S = 120
ARTIFACTS = Path(__file__).resolve().parents[2] / ".test-artifacts"


@pytest.fixture(scope="module")
def site(trained_work, tmp_path_factory):
    """A work folder of its own (a copy of the trained models) and a client of its app."""
    work = tmp_path_factory.mktemp("site")
    shutil.copytree(trained_work / "models", work / "models")
    (work / "secret.txt").write_text("outside the web folder")
    return work, TestClient(make_app(work))


def wait_job(client: TestClient, url: str) -> dict:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        state = client.get(url).json()
        if state["state"] in ("done", "failed"):
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.1)


def upload(client: TestClient, path: Path, name: str | None = None):
    with open(path, "rb") as fh:
        return client.post("/api/jobs", files={"video": (name or path.name, fh, "video/x-matroska")})


def test_upload_poll_and_fetch_the_results(site, tiny_data):
    work, client = site
    res = upload(client, tiny_data / "test" / "01.mkv", "../../door cam 01.mkv")
    assert res.status_code == 201, res.text
    state = wait_job(client, res.json()["url"])
    assert state["state"] == "done" and state["frames_done"] == 80 and state["progress"] == 1.0 and state["name"] == "door_cam_01.mkv"
    report = client.get(state["report_url"])
    assert report.status_code == 200 and "<video" in report.text
    scores = client.get(state["scores_url"]).text.splitlines()
    assert scores[0].startswith("frame,time_s,score") and len(scores) == 81
    assert client.get(state["report_url"].replace("report.html", "report.mp4")).status_code == 200
    listed = client.get("/api/videos").json()
    assert listed[0]["name"] == "door_cam_01.mkv" and listed[0]["events"] >= 1 and listed[0]["peak_score"] > 3
    home = client.get("/").text
    assert "door_cam_01.mkv" in home and "6 regions" in home
    assert (work / "web" / res.json()["id"] / "upload" / "door_cam_01.mkv").exists(), "the name is sanitised, the file inside WORK/web"


@pytest.mark.parametrize("name", ["scores.csv", "report.mp4"])
def test_an_upload_named_like_an_output_is_kept_apart(site, tiny_data, name):
    work, client = site
    res = upload(client, tiny_data / "test" / "01.mkv", name)
    state = wait_job(client, res.json()["url"])
    assert state["state"] == "done" and client.get(state["report_url"]).status_code == 200, state
    assert (work / "web" / res.json()["id"] / "upload" / name).read_bytes() == (tiny_data / "test" / "01.mkv").read_bytes()


@pytest.mark.parametrize("kind", ["empty", "noise", "no file"])
def test_bad_uploads_are_refused_and_leave_nothing(site, kind, tmp_path):
    work, client = site
    before = sorted((work / "web").iterdir())
    if kind == "no file":
        res = client.post("/api/jobs", data={"other": "x"})
    else:
        bad = tmp_path / "bad.mp4"
        bad.write_bytes(b"" if kind == "empty" else np.random.default_rng(0).bytes(5000))
        res = upload(client, bad)
    assert res.status_code == 400 and res.json()["error"], res.text
    assert {"empty": "empty file", "noise": "not a video", "no file": "no file"}[kind] in res.json()["error"]
    assert sorted((work / "web").iterdir()) == before


def test_a_truncated_upload_fails_its_job_with_a_message_and_leaves_nothing(site, tiny_data, tmp_path):
    work, client = site
    cut = tmp_path / "cut.mkv"
    data = (tiny_data / "test" / "01.mkv").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    res = upload(client, cut)
    state = wait_job(client, res.json()["url"])
    assert state["state"] == "failed" and "damaged or truncated" in state["error"]
    assert not (work / "web" / res.json()["id"]).exists()
    assert client.get("/").status_code == 200, "the server goes on"


def test_too_large_an_upload_is_refused(trained_work, tiny_data, tiny_cfg, tmp_path):
    shutil.copytree(trained_work / "models", tmp_path / "models")
    client = TestClient(make_app(tmp_path, tiny_cfg.with_overrides(serve={"max_upload_megabytes": 0.01})))
    big = tmp_path / "big.mkv"
    big.write_bytes((tiny_data / "test" / "01.mkv").read_bytes() * 3)
    res = upload(client, big)
    assert res.status_code == 413 and "limit" in res.json()["error"]
    assert list((tmp_path / "web").iterdir()) == []


@pytest.mark.parametrize(
    "url",
    ["/files/../secret.txt", "/files/%2e%2e/secret.txt", "/files/..%2fsecret.txt", "/files/%2Fetc%2Fpasswd", "/files//etc/passwd",
     "/files/link/secret.txt", "/files/escape", "/files/"],
)  # fmt: skip
def test_nothing_outside_work_web_can_be_read(site, url):
    work, client = site
    web = work / "web"
    if not (web / "link").exists():
        os.symlink(work, web / "link")  # a symlink inside the web folder to outside it
        os.symlink(work / "secret.txt", web / "escape")
    res = client.get(url)
    assert res.status_code == 404 and "outside the web folder" not in res.text


def test_upload_names_are_sanitised():
    assert safe_name("../../etc/passwd") == "passwd" and safe_name("C:\\x\\.hidden clip.mp4") == "hidden_clip.mp4" and safe_name("") == "video"


# -- in a real browser -----------------------------------------------------------------------------

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium); `make test` installs it when run as root")
def test_upload_through_the_page_follow_progress_and_play_the_report(trained_work, tiny_data, tmp_path):
    import uvicorn

    shutil.copytree(trained_work / "models", tmp_path / "models")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(make_app(tmp_path), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            outside = []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(f"http://127.0.0.1:{port}/") else None)
            page.goto(f"http://127.0.0.1:{port}/")
            page.set_input_files("#video", str(tiny_data / "test" / "01.mkv"))
            page.click("#go")
            page.wait_for_selector("#bar:not([hidden])", timeout=DEADLINE_S * 1000)
            page.wait_for_url("**/report.html", timeout=DEADLINE_S * 1000)
            played = page.evaluate(
                """async () => {
                const v = document.getElementById("video");
                if (v.readyState < 1) await new Promise((ok) => { v.onloadedmetadata = ok; v.onerror = ok; });
                if (v.error) return -1;
                await v.play();
                const start = performance.now();
                while (v.currentTime <= 0.2 && !v.ended && performance.now() - start < 20000) await new Promise((ok) => setTimeout(ok, 50));
                return v.currentTime;
            }"""
            )
            assert played > 0.2, "the report's video plays from the server"
            page.goto(f"http://127.0.0.1:{port}/")
            assert page.locator("#videos a").first.inner_text() == "01.mkv"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "webapp-home.png"), full_page=True)
            browser.close()
        assert outside == [], f"requests left the machine: {outside}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
