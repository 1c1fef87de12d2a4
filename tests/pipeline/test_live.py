"""`watch`: live streams scored as they arrive (issue 20), against real components on loopback:
an ffmpeg stream server, a mosquitto broker, an HTTP server for the webhook."""

from __future__ import annotations

import csv
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import as_h264, as_motion_jpeg, cut_as

from bench.watch import free_port, serve
from cuboid_ad.core.config import ExtractConfig, to_toml
from cuboid_ad.core.errors import InputError
from cuboid_ad.core.workdir import WorkDir
from cuboid_ad.pipeline.live.sinks import Webhook
from cuboid_ad.pipeline.live.watch import FrameQueue, live_source, watch
from cuboid_ad.pipeline.media.decode import ffmpeg_exe, open_clip, read_frames
from cuboid_ad.pipeline.stages.score import score_video

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 120  # no wait in these tests is longer


def messages(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def wait_until(condition, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"watch ended ({proc.returncode}) before {what}: {stderr_of(proc)}")
        if time.monotonic() > deadline:
            pytest.fail(f"waited {DEADLINE_S} s for {what}")
        time.sleep(0.05)


def stderr_of(proc: subprocess.Popen) -> str:
    """What a process started by _watch wrote to stderr (a file, so that a full pipe never blocks it)."""
    path = getattr(proc, "stderr_path", None)
    return path.read_text(errors="replace") if path is not None and path.exists() else ""


def csv_scores(out: Path) -> list[dict]:
    rows = []
    for day in sorted(out.glob("scores-*.csv")):
        with open(day, newline="") as fh:
            rows += list(csv.DictReader(fh))
    return rows


@pytest.fixture(scope="module")
def watched_file(trained_work, tiny_data, tmp_path_factory):
    """`watch` of the test clip as a file, read as fast as possible."""
    out = tmp_path_factory.mktemp("watched")
    summary = watch(str(tiny_data / "test" / "01.mkv"), WorkDir(trained_work).models, out / "live", camera="door", events_path=out / "events.jsonl")
    return summary, out


def test_watch_gives_the_same_scores_as_score(watched_file, trained_work, tiny_data):
    summary, out = watched_file
    scored = score_video(tiny_data / "test" / "01.mkv", WorkDir(trained_work).models, None)
    rows = csv_scores(out / "live")
    assert summary.frames == len(rows) == scored.n_frames == 80 and summary.dropped == 0
    # watch feeds the models in other batch sizes than score: see test_score's chunk-size test for the tolerance
    live = np.array([float(r["score"]) for r in rows])
    np.testing.assert_allclose(live, scored.score, rtol=1e-5, atol=1e-2)
    clear = np.abs(scored.score - scored.threshold) > 1e-2  # flags compared where rounding cannot flip them
    assert clear.mean() > 0.9
    assert np.array_equal(np.array([int(r["anomalous"]) for r in rows])[clear], scored.anomalous.astype(int)[clear])
    times = np.array([float(r["frame_time"]) for r in rows])
    np.testing.assert_allclose(np.diff(times), 0.1, atol=1e-3)  # the file's own spacing, not the decoding speed


def test_an_anomaly_gives_one_new_to_end_event_in_its_region(watched_file, tiny_data):
    summary, out = watched_file
    msgs = messages(out / "events.jsonl")
    assert [m["status"] for m in msgs if m["type"] == "status"] == ["online", "offline"] and msgs[0]["source_size"] == [96, 64]
    events = [m for m in msgs if m["type"] != "status"]
    assert events[0]["type"] == "new" and events[-1]["type"] == "end" and {m["type"] for m in events[1:-1]} <= {"update"}
    assert len({m["id"] for m in events}) == 1 and summary.events == 1
    new, end = events[0], events[-1]
    assert new["camera"] == "door" and new["end_time"] is None and new["score"] > new["threshold"]
    assert "r1c2" in new["entered_regions"] and "r1c2" in end["entered_regions"]
    assert end["end_time"] >= end["start_time"] == new["start_time"] and end["top_score"] >= new["top_score"]
    # the event lies on the labelled frames (anomalous 1-based range, 10 fps from the first frame)
    first_frame_time = min(float(r["frame_time"]) for r in csv_scores(out / "live"))
    (first, last), = json.loads((tiny_data / "labels.json").read_text())["01"]["anomalous"]
    assert (first - 1) / 10 - 0.5 <= end["start_time"] - first_frame_time <= (last - 1) / 10
    # the snapshot is a PNG; the clip decodes and starts before the event (clip_before_seconds)
    assert Path(end["snapshot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    clip = Path(end["clip"])
    n = sum(len(f) for f in read_frames(open_clip(clip, ExtractConfig(frame_height=64)), ExtractConfig(frame_height=64)))
    assert n >= round((end["end_time"] - end["start_time"]) * 10) + 10
    assert not list((out / "live").rglob(".*.tmp-*"))


def test_a_stream_on_standard_input(trained_work, tiny_data, tmp_path):
    with open(tiny_data / "test" / "01.mkv", "rb") as clip:
        res = subprocess.run([sys.executable, "cli.py", "watch", "-", "--work", str(trained_work), "--out", str(tmp_path / "out"), "-q"],
                             cwd=ROOT, stdin=clip, capture_output=True, text=True, timeout=DEADLINE_S)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert [json.loads(line)["type"] for line in res.stdout.splitlines()][-1] == "status" and len(csv_scores(tmp_path / "out")) == 80
    assert "watch stdin: 80 frames scored" in res.stderr


def test_a_source_of_another_shape_is_named_in_a_warning(trained_work, tmp_path, caplog):
    wide = tmp_path / "wide.mkv"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x64:rate=10:duration=2", "-c:v", "ffv1", str(wide)], check=True)
    with caplog.at_level("WARNING"):
        watch(str(wide), WorkDir(trained_work).models, tmp_path / "out", events_path=tmp_path / "ev.jsonl")
    assert any("source is 160x64 but the models were trained on 96x64" in r.getMessage() for r in caplog.records)
    assert messages(tmp_path / "ev.jsonl")[0]["source_size"] == [160, 64]


def test_a_stream_is_cut_as_its_codec_says_from_its_first_frame(trained_work, tiny_data, tmp_path, monkeypatch):
    """`watch` learns a stream's codec from the banner of the ffmpeg that decodes it (a camera's RTSP stream has no
    file header to read first), and scores its frames with a tube cutter made for it: reading the codec's blocks while
    the night filter is off for H.264, not for Motion JPEG (each frame coded alone)."""
    made = cut_as(monkeypatch)
    clip = tiny_data / "test" / "01.mkv"
    for clip, inter in ((as_h264(clip, tmp_path / "01.mp4"), True), (as_motion_jpeg(clip, tmp_path / "01.avi"), False)):
        made.clear()
        summary = watch(str(clip), WorkDir(trained_work).models, tmp_path / clip.suffix[1:], events_path=tmp_path / "ev.jsonl")
        assert summary.frames == 80
        # the session's first cutter is made before the stream is opened; its first frame makes the stream's own
        assert made == [False, inter], f"{clip.name}: cutters made for an inter-coded stream: {made}"


def test_the_frame_queue_drops_the_oldest_and_counts():
    q = FrameQueue(3)
    for i in range(5):
        q.put(i)
    assert q.take(0) == [2, 3, 4] and q.dropped == 2


@pytest.mark.parametrize(
    "source, needle",
    [
        ("tcp://127.0.0.1:{closed}", "no video from this source"),
        ("http://127.0.0.1:{http}/noise.mp4", "no video from this source"),
        ("/dev/video-none", "no such device"),
        ("missing.mkv", "no such file"),
    ],
)
def test_bad_sources_fail_in_one_line_leaving_nothing(source, needle, trained_work, tmp_path):
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(20000))  # (a text file would decode: ffmpeg's tty demuxer)

    class Files(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(tmp_path), **k)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = source.format(closed=free_port(), http=server.server_address[1])
        res = subprocess.run([sys.executable, "cli.py", "watch", url, "--work", str(trained_work), "--out", str(tmp_path / "out"),
                              "--events", str(tmp_path / "ev.jsonl"), "-q"], cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S)  # fmt: skip
    finally:
        server.shutdown()
    assert res.returncode == 1 and res.stderr.startswith("error: ") and needle in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "ev.jsonl").exists()


def test_live_sources_get_live_input_flags():
    rtsp = dict(live_source("rtsp://cam/stream", False, 20).options)
    assert rtsp["rtsp_transport"] == "tcp" and rtsp["timeout"] == "40000000" and rtsp["analyzeduration"] == "500000"
    assert dict(live_source("tcp://h:1", False, 5).options)["rw_timeout"] == "10000000"
    with pytest.raises(InputError, match="not a file"):
        live_source(str(ROOT), False, 20)


def _serve(clip: Path, port: int | None = None, loop: bool = True) -> tuple[subprocess.Popen, int]:
    """bench.watch's stream server, a keyframe every 5 frames, looping by default, and its port. ffmpeg binds the
    port itself, so a free one is probed first: when another process takes it in between, another port is tried;
    a given ``port`` (a restart) is retried while the old socket lingers."""
    deadline = time.monotonic() + 30
    while True:
        try_port = port or free_port()
        try:
            return serve(clip, try_port, loop=loop, keyframe_every=5), try_port
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as from a terminal, even when the tests run in a background job


def _watch(source: str, work: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    """`cli.py watch SOURCE` in its own process, its messages to tmp_path/events.jsonl, its files to tmp_path/out."""
    stderr_path = tmp_path / "watch.stderr"
    with open(stderr_path, "ab") as err:
        proc = subprocess.Popen([sys.executable, "cli.py", "watch", source, "--work", str(work), "--events", str(tmp_path / "events.jsonl"),
                                 "--out", str(tmp_path / "out"), "-q", *extra], cwd=ROOT, stderr=err, preexec_fn=_default_sigint)  # fmt: skip
    proc.stderr_path = stderr_path
    return proc


def test_a_tcp_stream_is_scored_and_survives_its_server_restarting(trained_work, tiny_data, tiny_cfg, tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(to_toml(tiny_cfg.with_overrides(live={"stall_seconds": 3.0, "reconnect_max_seconds": 2.0})))
    server, port = _serve(tiny_data / "test" / "01.mkv")
    events = tmp_path / "events.jsonl"
    proc = _watch(f"tcp://127.0.0.1:{port}", trained_work, tmp_path, "--config", str(cfg), "--camera", "gate", "--max-seconds", "100")
    try:
        wait_until(lambda: any(m["type"] == "end" for m in messages(events)), "a first event to end", proc)
        server.kill()
        server.wait()
        wait_until(lambda: any(m.get("status") == "reconnecting" for m in messages(events)), "reconnecting", proc)
        server, _ = _serve(tiny_data / "test" / "01.mkv", port)
        wait_until(lambda: [m.get("status") for m in messages(events)].count("online") == 2, "the second online", proc)
        n_before = len(csv_scores(tmp_path / "out"))
        wait_until(lambda: len(csv_scores(tmp_path / "out")) > n_before + 20, "scoring to go on", proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=DEADLINE_S)
    finally:
        for p in (proc, server):
            if p.poll() is None:
                p.kill()
    assert proc.returncode == 0, stderr_of(proc)
    msgs = messages(events)
    statuses = [m["status"] for m in msgs if m["type"] == "status"]
    assert statuses[0] == "online" and statuses[-1] == "offline" and "reconnecting" in statuses
    ends = [m for m in msgs if m["type"] == "end"]
    assert ends and all("r1c2" in m["entered_regions"] for m in ends)
    news = {m["id"] for m in msgs if m["type"] == "new"}
    assert news == {m["id"] for m in ends}, "every event announced ends, SIGTERM included"


def test_a_stream_that_stalls_is_restarted_by_the_watchdog(trained_work, tiny_data, tiny_cfg, tmp_path):
    """The server stops sending without closing the connection (SIGSTOP): `stalled`, then reconnection."""
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(to_toml(tiny_cfg.with_overrides(live={"stall_seconds": 2.0, "reconnect_max_seconds": 1.0})))
    server, port = _serve(tiny_data / "test" / "01.mkv")
    events = tmp_path / "events.jsonl"
    proc = _watch(f"tcp://127.0.0.1:{port}", trained_work, tmp_path, "--config", str(cfg))
    try:
        wait_until(lambda: any(m.get("status") == "online" for m in messages(events)), "online", proc)
        server.send_signal(signal.SIGSTOP)
        wait_until(lambda: any(m.get("status") == "stalled" for m in messages(events)), "stalled", proc)
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait()
        server, _ = _serve(tiny_data / "test" / "01.mkv", port)
        wait_until(lambda: [m.get("status") for m in messages(events)].count("online") == 2, "online again", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE_S) == 0
    finally:
        for p in (proc, server):
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
    statuses = [m["status"] for m in messages(events) if m["type"] == "status"]
    stalled = statuses.index("stalled")
    assert statuses[stalled + 1] == "reconnecting" and statuses[-1] == "offline", statuses
    assert next(m for m in messages(events) if m.get("status") == "stalled")["seconds_without_frames"] >= 2.0


def test_every_frame_of_a_stream_is_scored(trained_work, tiny_data, tmp_path):
    server, port = _serve(tiny_data / "test" / "01.mkv", loop=False)
    events = tmp_path / "events.jsonl"
    proc = _watch(f"tcp://127.0.0.1:{port}", trained_work, tmp_path)
    try:
        wait_until(lambda: any(m.get("status") == "reconnecting" for m in messages(events)), "the stream to end", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE_S) == 0
    finally:
        for p in (proc, server):
            if p.poll() is None:
                p.kill()
    assert len(csv_scores(tmp_path / "out")) == 80, "no frame lost at the start or the end of a connection"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_or_ctrl_c_ends_an_open_event(trained_work, tiny_data, tmp_path, sig):
    events = tmp_path / "events.jsonl"
    proc = _watch(str(tiny_data / "test" / "01.mkv"), trained_work, tmp_path, "--realtime")
    wait_until(lambda: any(m["type"] == "new" for m in messages(events)), "an event", proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=DEADLINE_S) == 0, stderr_of(proc)
    kinds = [m.get("status", m["type"]) for m in messages(events)]
    assert kinds.index("new") < kinds.index("end") < kinds.index("offline"), kinds


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_gets_every_message_and_one_that_is_down_stops_nothing(trained_work, tiny_data, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        clip = str(tiny_data / "test" / "01.mkv")
        watch(clip, WorkDir(trained_work).models, tmp_path / "a", events_path=tmp_path / "a.jsonl", webhook=f"http://127.0.0.1:{server.server_address[1]}/hook")
    finally:
        server.shutdown()
    assert [m["type"] for m in _Hook.received] == [m["type"] for m in messages(tmp_path / "a.jsonl")]
    down = watch(clip, WorkDir(trained_work).models, tmp_path / "b", events_path=tmp_path / "b.jsonl", webhook=f"http://127.0.0.1:{free_port()}/")
    assert down.frames == 80 and down.events == 1
    assert down.messages_dropped == len(messages(tmp_path / "b.jsonl")), "every message to a receiver that is down is counted as dropped"


class _Receiver(http.server.BaseHTTPRequestHandler):
    """Answers with the statuses in ``answers`` in turn (then 200); ``hang`` seconds before each answer."""

    answers: list[int] = []
    hang = 0.0
    arrivals: list[float] = []

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).arrivals.append(time.monotonic())
        time.sleep(type(self).hang)
        code = type(self).answers.pop(0) if type(self).answers else 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    _Receiver.answers, _Receiver.hang, _Receiver.arrivals = [], 0.0, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_webhook_retries_a_failing_receiver_1_s_then_2_s_apart(receiver):
    _Receiver.answers = [500, 500]
    hook = Webhook(receiver, retries=2)
    hook.send({"type": "new"})
    hook.close(timeout=20)
    gaps = np.diff(_Receiver.arrivals)
    assert len(_Receiver.arrivals) == 3 and hook.dropped == 0, (_Receiver.arrivals, hook.dropped)
    assert 0.9 < gaps[0] < 1.8 and 1.9 < gaps[1] < 3.5, f"backoff 1 s then 2 s, not {gaps}"


def test_webhook_gives_up_on_a_receiver_that_hangs(receiver, caplog):
    _Receiver.hang = 3.0
    hook = Webhook(receiver, retries=0, timeout=0.5)
    t0 = time.monotonic()
    hook.send({"type": "new"})
    hook.close(timeout=20)
    assert hook.dropped == 1 and time.monotonic() - t0 < 2.5, "the POST times out after 0.5 s instead of waiting 3 s for the answer"
    assert "1 messages dropped in all" in caplog.text


def test_webhook_drops_and_counts_what_does_not_fit_its_queue(receiver):
    _Receiver.hang = 2.0
    hook = Webhook(receiver, retries=0, queue_size=2, timeout=10)
    hook.send({"n": 0})
    wait_until(lambda: len(_Receiver.arrivals) == 1, "the first message in flight")
    for n in range(1, 6):  # two fit the queue, three are dropped at once
        hook.send({"n": n})
    assert hook.dropped == 3
    hook.close(timeout=20)
    assert len(_Receiver.arrivals) == 3 and hook.dropped == 3, "the two queued ones are sent before closing"


def test_retention_keeps_the_newest_events(trained_work, tiny_data, tiny_cfg, tmp_path):
    twice = tmp_path / "twice.mkv"
    src = str(tiny_data / "test" / "01.mkv")
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", src, "-i", src, "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]",
                    "-c:v", "ffv1", str(twice)], check=True)  # fmt: skip
    cfg = tiny_cfg.with_overrides(live={"keep_events": 1})
    summary = watch(str(twice), WorkDir(trained_work).models, tmp_path / "out", cfg, events_path=tmp_path / "ev.jsonl")
    ends = [m for m in messages(tmp_path / "ev.jsonl") if m["type"] == "end"]
    assert summary.events == len(ends) >= 2, "the anomaly twice: at least two events"
    for older in ends[:-1]:
        assert not Path(older["snapshot"]).exists() and not Path(older["clip"]).exists()
    assert Path(ends[-1]["snapshot"]).exists() and Path(ends[-1]["clip"]).exists()


def _start_broker(exe: str, conf: Path, port: int, seconds: float) -> subprocess.Popen | None:
    """mosquitto with ``conf``, once it accepts connections on ``port``; None when it cannot bind it within ``seconds``
    (retried meanwhile: after a restart the old socket may linger)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        broker = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while broker.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return broker
            except OSError:
                time.sleep(0.05)
        if broker.poll() is None:
            broker.kill()
            broker.wait(timeout=10)
        time.sleep(0.2)
    return None


@pytest.fixture
def mosquitto(tmp_path):
    """A broker on loopback that keeps sessions and retained messages across a restart (``stop()``, ``start()``).
    mosquitto binds its port itself, so a free one is probed: when another process takes it first, another is tried."""
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if exe is None:
        pytest.skip("mosquitto is not installed (make test installs it where it can: apt-get install mosquitto)")
    (tmp_path / "broker").mkdir()
    conf = tmp_path / "mosquitto.conf"

    class Broker:
        def __init__(self) -> None:
            for _ in range(5):
                self.port = free_port()
                # `user root`: run as root, mosquitto would become `mosquitto`, who cannot write here; ignored otherwise
                conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                                f"persistence_location {tmp_path / 'broker'}/\nuser root\n")  # fmt: skip
                self.proc = _start_broker(exe, conf, self.port, 5.0)
                if self.proc is not None:
                    return
            pytest.fail("mosquitto did not start")

        def stop(self) -> None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

        def start(self) -> None:
            self.proc = _start_broker(exe, conf, self.port, 30.0) or pytest.fail("mosquitto did not start again on its port")

    broker = Broker()
    yield broker
    if broker.proc.poll() is None:
        broker.stop()


class _Subscriber:
    """A paho client subscribed to cuboid-ad/# at QoS 1; ``persistent``: its session (and the messages queued
    for it while it was away) outlives a broker restart. Waits for the broker's SUBACK, not a fixed time."""

    def __init__(self, port: int, client_id: str, persistent: bool = False):
        import paho.mqtt.client as mqtt

        self.got: list[tuple[str, str, bool]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        self.client.on_message = lambda c, u, m: self.got.append((m.topic, m.payload.decode(), m.retain))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("cuboid-ad/#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.reconnect_delay_set(0.2, 0.5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(self.subscribed.is_set, "the subscription")

    def events(self) -> list[dict]:
        return [json.loads(p) for t, p, _ in self.got if t == "cuboid-ad/events"]

    def retained(self, topic: str) -> list[str]:
        return [p for t, p, r in self.got if t == topic and r]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.real
def test_mqtt_gets_events_status_and_availability(mosquitto, trained_work, tiny_data, tmp_path):
    sub = _Subscriber(mosquitto.port, "test-subscriber")
    try:
        watch(str(tiny_data / "test" / "01.mkv"), WorkDir(trained_work).models, tmp_path / "out", camera="door",
              events_path=tmp_path / "ev.jsonl", mqtt=f"127.0.0.1:{mosquitto.port}")  # fmt: skip
        wait_until(lambda: ("cuboid-ad/available", "offline", False) in sub.got, "the offline message")
    finally:
        sub.close()
    events = [m["type"] for m in sub.events()]
    assert events[0] == "new" and events[-1] == "end"
    status = [p for t, p, _ in sub.got if t == "cuboid-ad/door/status"]
    assert status == ["online", "offline"]
    assert [p for t, p, _ in sub.got if t == "cuboid-ad/available"][:1] == ["online"]


@pytest.mark.real
def test_a_broker_outage_stops_no_scoring_and_loses_no_event_and_the_last_will_fires(mosquitto, trained_work, tiny_data, tiny_cfg, tmp_path):
    """The broker is stopped while a looping stream is watched, then started again; at the end `watch` is
    killed with SIGKILL, so only the broker's last will can say that the camera is gone."""
    server, port = _serve(tiny_data / "test" / "01.mkv")
    events = tmp_path / "events.jsonl"
    sub = _Subscriber(mosquitto.port, "test-persistent", persistent=True)
    proc = _watch(f"tcp://127.0.0.1:{port}", trained_work, tmp_path, "--camera", "door", "--mqtt", f"127.0.0.1:{mosquitto.port}", "--max-seconds", "200")
    try:
        wait_until(lambda: any(m["type"] == "end" for m in sub.events()), "a first event over MQTT", proc)
        mosquitto.stop()
        n_rows, ended = len(csv_scores(tmp_path / "out")), {m["id"] for m in messages(events) if m["type"] == "end"}
        # scoring goes on without the broker, through at least one more whole event
        wait_until(lambda: {m["id"] for m in messages(events) if m["type"] == "end"} - ended, "an event while the broker is away", proc)
        during = {m["id"] for m in messages(events) if m["type"] == "end"} - ended
        assert len(csv_scores(tmp_path / "out")) > n_rows + 20
        mosquitto.start()
        wait_until(lambda: during <= {m["id"] for m in sub.events() if m["type"] == "end"}, "the events queued while the broker was away", proc)
        fresh = _Subscriber(mosquitto.port, "test-fresh")
        wait_until(lambda: fresh.retained("cuboid-ad/available") and fresh.retained("cuboid-ad/door/status"), "the retained messages")
        assert fresh.retained("cuboid-ad/available")[-1] == "online" and fresh.retained("cuboid-ad/door/status")[-1] == "online"
        fresh.close()
        proc.kill()  # no goodbye: only the last will can tell
        proc.wait(timeout=DEADLINE_S)
        wait_until(lambda: ("cuboid-ad/available", "offline", False) in sub.got, "the last will")
        after = _Subscriber(mosquitto.port, "test-after")
        wait_until(lambda: after.retained("cuboid-ad/available"), "the retained availability")
        assert after.retained("cuboid-ad/available") == ["offline"]
        after.close()
    finally:
        sub.close()
        for p in (proc, server):
            if p.poll() is None:
                p.kill()
    news = [m["id"] for m in sub.events() if m["type"] == "new"]
    assert len(news) == len(set(news)), "no event twice"


# -- RTSP, against GStreamer's RTSP server ---------------------------------------------------------------

RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # the one with PyGObject; the venv has none


def _rtsp_ready() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    return subprocess.run([SYSTEM_PYTHON, str(RTSP_SERVER), "--check"], capture_output=True, timeout=60).returncode == 0


class _RtspServer:
    """rtsp_server.py in its own process: MJPEG over RTP, interleaved on TCP only (UDP is refused)."""

    def __init__(self, clip: Path, port: int = 0):
        deadline = time.monotonic() + 30
        while True:  # the same port again after a restart: retried while the old socket lingers
            self.proc = subprocess.Popen([SYSTEM_PYTHON, str(RTSP_SERVER), str(clip), "gate", str(port)], stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)  # fmt: skip
            first = self.proc.stdout.readline()
            if first.startswith("port "):
                break
            rest = self.proc.stdout.read()
            self.proc.wait(timeout=10)
            if time.monotonic() > deadline:
                pytest.fail(f"the RTSP server did not start: {first}{rest}")
            time.sleep(0.5)
        self.port = int(first.split()[1])
        self.clients = 0
        threading.Thread(target=self._count, daemon=True).start()  # drains its output while it runs

    def _count(self) -> None:
        for line in self.proc.stdout:
            self.clients += line.strip() == "client"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.mark.real
@pytest.mark.skipif(not _rtsp_ready(), reason="no GStreamer RTSP server (Debian: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good)")
def test_an_rtsp_camera_over_tcp_is_scored_and_survives_its_server_restarting(trained_work, tiny_data, tiny_cfg, tmp_path):
    """The protocol most cameras speak: a real RTSP server that only offers TCP, so `watch` gets frames
    only if it asks for `-rtsp_transport tcp`; the server is killed and started again on the same port."""
    clip = as_motion_jpeg(tiny_data / "test" / "01.mkv", tmp_path / "gate.avi")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(to_toml(tiny_cfg.with_overrides(live={"stall_seconds": 3.0, "reconnect_max_seconds": 1.0})))
    server = _RtspServer(clip)
    events = tmp_path / "events.jsonl"
    url = f"rtsp://127.0.0.1:{server.port}/gate"
    proc = _watch(url, trained_work, tmp_path, "--config", str(cfg), "--camera", "gate", "--max-seconds", "150")
    try:
        wait_until(lambda: any(m["type"] == "end" for m in messages(events)), "a first event to end", proc)
        assert server.clients >= 1
        online = [m.get("status") for m in messages(events)].count("online")
        server.stop()
        wait_until(lambda: any(m.get("status") in ("reconnecting", "stalled") for m in messages(events)[-3:]), "the lost server noticed", proc)
        server = _RtspServer(clip, server.port)
        wait_until(lambda: [m.get("status") for m in messages(events)].count("online") > online, "online again after the restart", proc)
        wait_until(lambda: server.clients >= 1, "the restarted server's client", proc)
        n_before = len(csv_scores(tmp_path / "out"))
        wait_until(lambda: len(csv_scores(tmp_path / "out")) > n_before + 20, "scoring to go on", proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
    assert proc.returncode == 0, stderr_of(proc)
    msgs = messages(events)
    statuses = [m["status"] for m in msgs if m["type"] == "status"]
    assert statuses[0] == "online" and statuses[-1] == "offline", statuses
    ends = [m for m in msgs if m["type"] == "end"]
    assert ends and all(m["camera"] == "gate" and "r1c2" in m["entered_regions"] for m in ends), ends
    assert {m["id"] for m in msgs if m["type"] == "new"} == {m["id"] for m in ends}


def test_a_source_that_never_sends_a_frame_is_one_clear_error(trained_work, tiny_cfg, tmp_path):
    """A server that accepts the connection and stays silent (the port is held by this test, no probe race)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        cfg = tmp_path / "cfg.toml"
        cfg.write_text(to_toml(tiny_cfg.with_overrides(live={"stall_seconds": 1.0, "reconnect_max_seconds": 1.0})))
        url = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "cli.py", "watch", url, "--work", str(trained_work), "--out", str(tmp_path / "out"),
                              "--events", str(tmp_path / "ev.jsonl"), "--config", str(cfg), "-q"],
                             cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S)  # fmt: skip
    assert res.returncode == 1 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert f"{url}: no video from this source" in res.stderr, res.stderr
    assert time.monotonic() - t0 < 30, "given up after the watchdog's stall, not ffmpeg's own long timeout"
    assert not (tmp_path / "out").exists(), "nothing left behind"


def _ffmpeg_children() -> list[int]:
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(os.getpid()) and "ffmpeg" in fields.get("Name", ""):
            out.append(int(status.parent.name))
    return out


def test_a_crash_in_the_feed_thread_ends_the_watch_with_it_and_its_ffmpeg(trained_work, tiny_data, tmp_path, monkeypatch):
    """A bug in the decoding thread must end the watch with that error, not leave it waiting for frames forever."""
    from cuboid_ad.pipeline.live import feed

    def boom(self, size, codec):
        raise RuntimeError("boom in the feed thread")

    monkeypatch.setattr(feed.Feed, "_on_input", boom)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            watch(str(tiny_data / "test" / "01.mkv"), WorkDir(trained_work).models, tmp_path / "out", events_path=tmp_path / "ev.jsonl", realtime=True)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(DEADLINE_S)
    assert not t.is_alive(), "the watch hangs after its feed thread died"
    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeError) and "boom" in str(outcome[0]), outcome
    deadline = time.monotonic() + 10
    while _ffmpeg_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _ffmpeg_children(), "its ffmpeg is left running"


def test_an_event_that_enters_a_second_region_sends_an_update(trained_work, tmp_path):
    """A bright square from r1c2 walking left into r1c1: ``update`` names the region entered, at most one a second."""
    from cuboid_ad.pipeline.media.synthetic import Mover, render_clip, write_video

    frames, _ = render_clip(80, 64, 96, seed=777, extra=[Mover(20, 58.0, 80.0, -1.0, 0.0, 5.0, 245, "square")])
    clip = write_video(frames, tmp_path / "walker.mkv")
    watch(str(clip), WorkDir(trained_work).models, tmp_path / "out", events_path=tmp_path / "ev.jsonl", realtime=True)
    msgs = [m for m in messages(tmp_path / "ev.jsonl") if m["type"] != "status"]
    seen = [(m["type"], m["entered_regions"]) for m in msgs]
    assert [m["type"] for m in msgs[:2]] == ["new", "update"] and msgs[0]["entered_regions"] == ["r1c2"], seen
    assert set(msgs[1]["entered_regions"]) > {"r1c2"}, f"the update names the region entered: {seen}"
    event = [m for m in msgs if m["id"] == msgs[0]["id"]]
    assert event[-1]["type"] == "end" and all(a["type"] == "update" for a in event[1:-1]), seen
    for before, after in zip(event, event[1:]):
        assert set(before["entered_regions"]) <= set(after["entered_regions"]), "regions entered are never forgotten"
        assert after["frame_time"] - before["frame_time"] >= 0.9 or after["type"] == "end", "at most one update a second"
