"""`serve` (issue 21): the web app's API in-process (Starlette's test client), and the pages in a
real browser (Playwright with Debian's chromium) against a real uvicorn server on loopback."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import serving
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
    peak = max(float(row.split(",")[2]) for row in scores[1:])
    assert listed[0]["name"] == "door_cam_01.mkv" and listed[0]["events"] >= 1 and listed[0]["peak_score"] == pytest.approx(peak, abs=0.01)
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

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"]


@pytest.mark.real
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium); `make test` installs it when run as root")
def test_upload_through_the_page_follow_progress_and_play_the_report(trained_work, tiny_data, tmp_path):
    # only this test needs playwright: without it, the rest of the file still runs
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

    shutil.copytree(trained_work / "models", tmp_path / "models")
    with serving(make_app(tmp_path)) as port:
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


# -- the app's error paths, and a real server answering raw requests -----------------------------------------


def test_an_unknown_job_is_a_404_in_json(site):
    _, client = site
    res = client.get("/api/jobs/no-such-job")
    assert res.status_code == 404 and res.json() == {"error": "no such job"}


def test_a_broken_job_folder_does_not_take_the_pages_down(site, tiny_data):
    work, client = site
    state = wait_job(client, upload(client, tiny_data / "test" / "01.mkv", "good.mkv").json()["url"])
    assert state["state"] == "done"
    broken = work / "web" / "9999-broken"
    broken.mkdir(parents=True)
    (broken / "job.json").write_text("{not json")
    half = work / "web" / "9999-half"
    half.mkdir()
    (half / "job.json").write_text('{"name": "half.mkv", "scored": "now"}')  # no scores.csv
    try:
        assert client.get("/").status_code == 200
        listed = client.get("/api/videos")
        assert listed.status_code == 200 and "good.mkv" in [v["name"] for v in listed.json()]
        assert not {"half.mkv"} & {v["name"] for v in listed.json()}
    finally:
        shutil.rmtree(broken)
        shutil.rmtree(half)


def test_a_second_upload_waits_in_the_queue_then_runs(site, tiny_data):
    _, client = site
    first = upload(client, tiny_data / "test" / "01.mkv", "first.mkv").json()
    second = upload(client, tiny_data / "test" / "01.mkv", "second.mkv").json()
    seen = client.get(second["url"]).json()["state"]
    assert seen == "queued", "one video is scored at a time"
    assert {j["name"] for j in client.get("/api/jobs").json()} >= {"second.mkv"}
    assert wait_job(client, first["url"])["state"] == "done" and wait_job(client, second["url"])["state"] == "done"


def test_an_event_marked_normal_on_the_web_is_listed_absorbed_and_undone(trained_work, tiny_data, tmp_path):
    """A report's "Not an anomaly" button and the home page's feedback list, through the API: the event's stretch is
    recorded, the update job absorbs it and says what changed in the CLI's words, and undo forgets it."""
    work = tmp_path / "work"
    shutil.copytree(trained_work, work)  # the update trains on the work folder's normal cuboids
    client = TestClient(make_app(work))
    state = wait_job(client, upload(client, tiny_data / "test" / "01.mkv").json()["url"])
    assert state["state"] == "done", state
    assert len((work / "web" / state["id"] / "events.csv").read_text().splitlines()) > 1, "the injected mover raises an event"
    assert client.post(f"/api/feedback?job={state['id']}", json={"evnt": 1}).status_code == 400
    assert client.post("/api/feedback?job=no-such-job", json={"event": 1}).status_code == 404
    assert client.post(f"/api/feedback?job={state['id']}", json={"event": 99}).status_code == 400
    marked = client.post(f"/api/feedback?job={state['id']}", json={"event": 1})
    assert marked.status_code == 201, marked.text
    rid = marked.json()["id"]
    rows = client.get("/api/feedback").json()
    assert [(r["id"], r["source"], r["absorbed"]) for r in rows] == [(rid, "01.mkv", False)]
    update = wait_job(client, client.post("/api/feedback/apply").json()["url"])
    assert update["state"] == "done", update
    assert update["name"].startswith("models version 1 absorbs 1 stretch(es) in ") and "; regions changed: " in update["name"], update["name"]
    assert client.get("/api/feedback").json()[0]["absorbed"]
    assert client.post(f"/api/feedback/{rid}/undo").json() == {"undone": rid}
    assert client.get("/api/feedback").json() == []
    assert client.post(f"/api/feedback/{rid}/undo").status_code == 404


def test_a_crash_inside_a_job_fails_it_as_an_internal_error_and_the_server_goes_on(site, tiny_data, monkeypatch):
    from cuboid_ad.pipeline.views import webapp

    work, client = site

    def crash(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(webapp, "report", crash)
    res = upload(client, tiny_data / "test" / "01.mkv", "crash.mkv").json()
    state = wait_job(client, res["url"])
    assert state["state"] == "failed" and state["error"] == "internal error: RuntimeError: a bug"
    assert not (work / "web" / res["id"]).exists()
    monkeypatch.undo()
    assert wait_job(client, upload(client, tiny_data / "test" / "01.mkv", "after.mkv").json()["url"])["state"] == "done"


@pytest.fixture
def real_server(trained_work, tiny_cfg, tmp_path):
    """The app on a real uvicorn, a limit of 50 kB on uploads, with a secret beside the web folder."""

    shutil.copytree(trained_work / "models", tmp_path / "models")
    (tmp_path / "secret.txt").write_text("outside the web folder")
    with serving(make_app(tmp_path, tiny_cfg.with_overrides(serve={"max_upload_megabytes": 0.05}))) as port:
        yield tmp_path, port


def raw_get(port: int, path: str) -> tuple[int, str, str]:
    """GET ``path`` exactly as written (http.client sends it untouched, unlike httpx): status, content type, body."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.endheaders()
    res = conn.getresponse()
    body = res.read().decode(errors="replace")
    conn.close()
    return res.status, res.getheader("content-type", ""), body


@pytest.mark.parametrize("path", ["/files/../secret.txt", "/files/a/../../secret.txt", "/files/%2e%2e/secret.txt", "/files/..%2fsecret.txt"])
def test_traversal_sent_raw_reaches_the_handler_and_it_refuses(real_server, path):
    work, port = real_server
    status, ctype, body = raw_get(port, path)
    assert status == 404 and "outside the web folder" not in body
    assert ctype.startswith("application/json") and json.loads(body) == {"error": "not found"}, "refused by the files handler, not the router"
    assert raw_get(port, "/no/such/route")[1].startswith("text/plain"), "the router's own 404 is plain text: the two can be told apart"


def post_upload(port: int, size: int, declare_length: bool) -> tuple[int, dict]:
    """A multipart upload of ``size`` bytes, with its Content-Length declared, or chunked without one."""
    import http.client

    boundary = "xyzzy"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"big.mkv\"\r\n"
            "Content-Type: video/x-matroska\r\n\r\n").encode()  # fmt: skip
    body = head + b"\0" * size + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if declare_length:
        conn.request("POST", "/api/jobs", body=body, headers=headers)
    else:
        conn.request("POST", "/api/jobs", body=(body[i : i + 8192] for i in range(0, len(body), 8192)), headers=headers, encode_chunked=True)
    res = conn.getresponse()
    out = res.status, json.loads(res.read() or b"{}")
    conn.close()
    return out


def test_both_upload_limits_refuse_with_413_and_leave_nothing(real_server):
    work, port = real_server
    status, body = post_upload(port, 200_000, declare_length=True)
    assert status == 413 and body["error"].startswith("the upload is 0 MB; the limit"), "refused by its declared length, unread"
    status, body = post_upload(port, 200_000, declare_length=False)
    assert status == 413 and body["error"].startswith("the upload is over the limit"), "refused by the bytes counted as they came"
    assert not list((work / "web").iterdir())


def test_serve_through_the_cli_on_a_port_warns_when_it_is_not_loopback(trained_work, tmp_path):
    import subprocess
    import sys
    import urllib.request

    shutil.copytree(trained_work / "models", tmp_path / "models")
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parents[2] / "cli.py"), "serve", "--work", str(tmp_path), "--host", "0.0.0.0",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as res:
                    assert res.status == 200 and b"cuboid-ad" in res.read()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "not listening"
                time.sleep(0.2)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "there is no login" in err and "0.0.0.0" in err
