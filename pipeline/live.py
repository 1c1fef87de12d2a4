"""Stage 7, watch: a live stream scored as it arrives, its events sent as messages.

A helper thread runs ffmpeg on the source (a camera URL, a device, standard input
or a file) and puts each decoded frame, with its wall-clock time, in a bounded
queue that drops the oldest frames when scoring falls behind. The main thread
scores what is queued with the same chain as ``score`` (tubes, the ensemble's
sliding windows, the alarm threshold), so a file gives the same per-frame scores
either way, and turns flagged frames into events with the same rule (``score.
min_event_seconds``, ``score.event_gap_seconds``). A watchdog restarts ffmpeg when
no frame has come for ``live.stall_seconds``; a lost stream is reconnected after
1 s, doubling up to ``live.reconnect_max_seconds``.

Messages follow the lifecycle of Frigate's MQTT events: ``new`` once an event has
lasted the minimum duration, ``update`` when it enters another region or reaches a
higher score (at most once a second), ``end`` with a snapshot PNG of its peak frame
and an MP4 from ``live.clip_before_seconds`` before it to its end; ``status``
messages (``online``, ``stalled``, ``reconnecting``, ``offline``) when the stream
changes state.

Files in ``out_path``: ``scores-YYYY-MM-DD.csv`` (one row per scored frame, a new
file each local day) and ``events/<id>.png``, ``events/<id>.mp4``; the oldest are
deleted beyond ``live.keep_events`` events or ``live.keep_megabytes``.
"""

from __future__ import annotations

import collections
import csv
import logging
import math
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.artifacts import new_folder, remove_stale_temporaries
from core.config import Config
from core.errors import InputError
from cuboids.slicing import TubeCutter
from ensemble.anomaly_map import AnomalyMapper
from ensemble.ensemble import Ensemble, ScoredFrames
from ensemble.events import Event, EventTracker
from ensemble.supervised import ClassifierStream
from pipeline.ffmpeg_io import ClipSource, ffmpeg_exe, measured_fps, read_frames
from pipeline.score import fuse_vote, fusion_classifier
from pipeline.sinks import JsonLines, Mqtt, Sinks, Webhook

log = logging.getLogger(__name__)

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


@dataclass(frozen=True)
class LiveSource:
    """How ffmpeg opens a watched source."""

    name: str  # as the user gave it
    url: str  # what follows ffmpeg's -i
    options: tuple[tuple[str, Any], ...]  # ffmpeg input options
    is_file: bool  # a file: its end is the end of the watch
    is_network: bool  # a URL: a lost connection is reconnected


def live_source(source: str, realtime: bool, stall_seconds: float) -> LiveSource:
    """Describe SOURCE for ffmpeg; InputError for a file or device that does not exist."""
    m = _URL.match(source)
    if source == "-":
        return LiveSource(source, "pipe:0", (), is_file=False, is_network=False)
    if m:
        scheme = m.group(1).lower()
        # ffmpeg's own I/O timeout (microseconds) backs up the watchdog, which acts first and says "stalled"
        timeout = str(int(2 * stall_seconds * 1e6))
        # low delay: a short probe (by default ffmpeg reads 5 s of stream before the first frame); not
        # `-fflags nobuffer`, which lost 10 to 60 of 150 frames of an MPEG-TS stream in our tests
        options: list[tuple[str, Any]] = [("flags", "low_delay"), ("analyzeduration", "500000"), ("probesize", "500000")]
        if scheme in ("rtsp", "rtsps"):
            options += [("rtsp_transport", "tcp"), ("timeout", timeout)]
        elif scheme != "file":
            options += [("rw_timeout", timeout)]
        if realtime:
            options.append(("re", None))
        return LiveSource(source, source, tuple(options), is_file=scheme == "file", is_network=scheme != "file")
    path = Path(source)
    if source.startswith("/dev/"):
        if not path.exists():
            raise InputError(f"{source}: no such device")
        return LiveSource(source, source, (("format", "v4l2"),), is_file=False, is_network=False)
    if not path.is_file():
        raise InputError(f"{source}: no such file" if not path.exists() else f"{source}: not a file, a URL or a device")
    return LiveSource(source, "file:" + str(path.resolve()), (("re", None),) if realtime else (), is_file=True, is_network=False)


def camera_name(source: str) -> str:
    """A default camera name: the file's stem, or the URL's host and path."""
    m = _URL.match(source)
    text = source[m.end() :].split("?")[0] if m else (Path(source).stem if source != "-" else "stdin")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "camera"


class FrameQueue:
    """Decoded frames waiting to be scored, at most ``maxlen``: beyond, the oldest are dropped (and
    counted), or with ``wait`` the decoder waits (a file read as fast as possible loses nothing)."""

    def __init__(self, maxlen: int, wait: bool = False):
        self.items: collections.deque = collections.deque()
        self.maxlen = maxlen
        self.wait = wait
        self.dropped = 0
        self.closed = False
        self.cond = threading.Condition()

    def put(self, item) -> None:
        with self.cond:
            if self.wait:
                self.cond.wait_for(lambda: len(self.items) < self.maxlen or self.closed)
            if self.closed:
                return
            if len(self.items) >= self.maxlen:
                self.items.popleft()
                self.dropped += 1
            self.items.append(item)
            self.cond.notify_all()

    def take(self, timeout: float) -> list:
        """Everything queued, waiting up to ``timeout`` for something."""
        with self.cond:
            self.cond.wait_for(lambda: self.items or self.closed, timeout)
            out = list(self.items)
            self.items.clear()
            self.cond.notify_all()
            return out

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class _Feed(threading.Thread):
    """Runs ffmpeg on the source and reconnects; each frame goes to the queue as (frame, time, segment).

    ``segment`` counts connections: the scorer starts afresh after a reconnection.
    ``time`` is the wall-clock time of the connection's first frame plus the frame's
    own timestamp since it, so a file read as fast as possible keeps its own spacing.
    """

    def __init__(self, src: ClipSource, live: LiveSource, cfg: Config, frames: FrameQueue, status: Callable[..., None], stop: threading.Event):
        super().__init__(name="feed", daemon=True)
        self.src, self.live, self.cfg, self.frames, self.status, self.stop = src, live, cfg, frames, status, stop
        self.proc: subprocess.Popen | None = None
        self.last_activity = time.monotonic()
        self.ever_connected = False
        self.error: InputError | None = None
        self.crash: BaseException | None = None
        self.segment = 0
        self.reconnects = 0
        self.input_size: tuple[int, int] | None = None
        self.lock = threading.Lock()

    def _on_ffmpeg(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.proc = proc
        if self.stop.is_set():
            self.kill()

    def _check_size(self, size: tuple[int, int] | None) -> None:
        """Warn when the source's shape differs from the models' frames: it is stretched to fit them."""
        self.input_size = size
        if size is None:
            return
        (w, h), (mw, mh) = size, (self.src.width, self.src.height)
        if abs((w / h) / (mw / mh) - 1) > 0.02:
            log.warning("%s: the source is %dx%d but the models were trained on %dx%d frames: frames are stretched to fit; "
                        "is this the camera the models were trained on?", self.live.name, w, h, mw, mh)  # fmt: skip

    def kill(self) -> None:
        """End the running ffmpeg (a stalled stream, or the end of the watch)."""
        with self.lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # a bug: the watch ends and raises it, instead of waiting forever
            self.crash = exc
            self.frames.close()

    def _run(self) -> None:
        delay = 1.0
        while not self.stop.is_set():
            self.last_activity = time.monotonic()
            anchor, reason = None, "the stream ended"  # anchor: set by this connection's first frame
            try:
                chunks = read_frames(self.src, self.cfg.extract, chunk_frames=1, allow_damaged=True, with_times=True, on_start=self._on_ffmpeg,
                                     on_input_size=self._check_size)  # fmt: skip
                for frames, times in chunks:
                    if anchor is None:
                        anchor = time.time() - float(times[0])
                        self.ever_connected, delay = True, 1.0
                        self.status("online", source_size=list(self.input_size) if self.input_size else None)
                    self.last_activity = time.monotonic()
                    self.frames.put((frames[0], anchor + float(times[0]), self.segment))
            except InputError as exc:
                reason = str(exc)
            with self.lock:
                self.proc = None
            if self.stop.is_set():
                return
            if not self.ever_connected:
                self.error = InputError(f"{self.live.name}: no video from this source ({_why(reason)})")
                self.frames.close()
                return
            if not self.live.is_network:  # a file, a device or standard input has ended
                self.frames.close()
                return
            self.reconnects += 1
            self.segment += 1
            self.status("reconnecting", reason=_why(reason), retry_in_seconds=delay)
            if self.stop.wait(delay):
                return
            delay = min(2 * delay, self.cfg.live.reconnect_max_seconds)


def _why(message: str) -> str:
    """ffmpeg's reason inside an InputError's text, or the text."""
    m = re.search(r"\((.*)\)[^()]*$", message)
    reason = m.group(1) if m else message
    return "the connection ended before a frame came" if reason == "ffmpeg gave no reason" else reason


class _ClipWriter:
    """An event's MP4, encoded by ffmpeg as frames come; renamed into place when the event ends."""

    def __init__(self, path: Path, size: tuple[int, int], channels: int, fps: float):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-clip")  # a killed watch's is removed by the next one
        h, w = size
        args = [
            ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "gray" if channels == 1 else "rgb24",
            "-s", f"{w}x{h}", "-framerate", f"{fps:.3f}", "-i", "pipe:", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264",
            "-preset", "veryfast", "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", str(self.tmp),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except (BrokenPipeError, ValueError):
            pass  # ffmpeg failed: reported by close()

    def close(self) -> Path | None:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        err = self.proc.stderr.read().decode(errors="replace").strip()
        self.proc.wait()
        if self.proc.returncode != 0:
            log.warning("%s: the event's clip could not be written (%s)", self.path.name, err.splitlines()[-1] if err else "ffmpeg failed")
            self.tmp.unlink(missing_ok=True)
            return None
        self.tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.tmp.unlink(missing_ok=True)


@dataclass
class _Announced:
    """An event the sinks were told about."""

    id: str
    start_time: float
    entered: set[str] = field(default_factory=set)
    top_score: float = -math.inf
    last_update: float = 0.0
    peak_frame: int = -1
    snapshot: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None  # picture, map, region scores, time
    clip: _ClipWriter | None = None


@dataclass
class WatchSummary:
    camera: str
    frames: int
    events: int
    dropped: int
    reconnects: int
    seconds: float
    cpu_seconds: float  # this process and its ffmpeg decoders
    out_path: Path


class _Watcher:
    """The scoring state of one watch: tubes, scorer, events, the frames an event's clip and snapshot need."""

    def __init__(self, ens: Ensemble, cfg: Config, out_path: Path, camera: str, sinks: Sinks, frames: FrameQueue, clf: ClassifierStream | None = None):
        self.ens, self.cfg, self.out_path, self.camera, self.sinks, self.queue = ens, cfg, out_path, camera, sinks, frames
        self.clf = clf
        self.p_odd: collections.deque = collections.deque()  # the classifier's p(not normal) of the frames pending
        self.events_dir = out_path / "events"
        self.mapper = AnomalyMapper(ens.regions, ens.frame_size)
        self.boxes = np.array([[r.top, r.left, r.height, r.width] for r in ens.regions])
        self.fps = self.cfg.extract.fps or 10.0  # until the frames' times tell
        self.tracker = EventTracker(ens.region_ids, ens.threshold_, self.cfg.score.min_event_seconds, self.cfg.score.event_gap_seconds, 1.0 / self.fps)
        self.segment = -1
        self.n_in = 0  # frames handed to the scorer, all segments
        self.n_scored = 0
        self.pending: collections.deque = collections.deque()  # (index, frame, time) handed in, not yet scored
        self.recent: collections.deque = collections.deque()  # (index, frame, time) scored, kept for clips
        self.times: collections.deque = collections.deque(maxlen=50)
        self.announced: _Announced | None = None
        self.n_events = 0
        self.csv_day: str | None = None
        self.csv_fh = None
        self.csv: Any = None

    # -- scoring ------------------------------------------------------------------------------
    def push(self, items: list) -> None:
        run: list = []
        for item in items:
            if item[2] != self.segment:
                self._score_run(run)
                run = []
                self._new_segment(item[2])
            run.append(item)
        self._score_run(run)

    def _new_segment(self, segment: int) -> None:
        self._finish_segment()
        self.segment = segment
        self.cut = TubeCutter.for_config(self.ens.regions, self.cfg)
        self.scorer = self.ens.scorer()
        if self.clf is not None:
            self.clf.reset()

    def _score_run(self, run: list) -> None:
        if not run:
            return
        frames = np.stack([f for f, _, _ in run])
        for f, t, _ in run:
            self.pending.append((self.n_in, f, t))
            self.times.append(t)
            self.n_in += 1
        self.fps = measured_fps(np.array(self.times), self.fps)
        self.tracker.frame_seconds = 1.0 / self.fps
        if self.clf is not None:
            self.p_odd.extend(1.0 - self.clf.push(frames)[0][:, 0])
        self._handle(self.scorer.push(self.cut(frames)))

    def _finish_segment(self) -> None:
        """Score the last frames of a connection's stream."""
        if self.segment < 0:
            return
        try:
            self._handle(self.scorer.finish())
        except InputError:  # fewer frames than one window: nothing to score them with
            log.warning("%s: %d frames before the stream was lost, too few to score", self.camera, len(self.pending))
            self.pending.clear()
            self.p_odd.clear()

    def finish(self) -> None:
        self._finish_segment()
        for e in self.tracker.finish():
            self._end(e)
        if self.announced is not None:  # too short to count after all: nothing to end
            self._discard()
        if self.csv_fh:
            self.csv_fh.close()

    def _handle(self, scored: ScoredFrames) -> None:
        n = len(scored)
        if not n:
            return
        rows = [self.pending.popleft() for _ in range(n)]
        if self.clf is not None:
            scored = fuse_vote(scored, np.array([self.p_odd.popleft() for _ in range(n)]), self.ens.threshold_, self.cfg.score.classifier_weight)
        self.recent.extend(rows)
        g = self.ens.grid_cells
        R = len(self.ens.regions)
        for i, (index, frame, t) in enumerate(rows):
            self._write_row(index, t, scored, i)
            flags, sc, rz = scored.anomalous[i : i + 1], scored.score[i : i + 1], scored.region_z[i : i + 1]
            for e in self.tracker.push(flags, sc, rz, np.array([t])):
                self._end(e)
            cur = self.tracker.current
            if cur is not None:
                if self.announced is None and self.tracker.counts(cur):
                    self._new(cur, scored.region_z[i], t)
                a = self.announced
                if a is not None:
                    if cur.peak_frame == self.n_scored and a.peak_frame != self.n_scored:
                        amap = self.mapper(scored.cell_z[i : i + 1].reshape(1, R, g, g))[0]
                        a.peak_frame, a.snapshot = self.n_scored, (frame, amap, scored.region_z[i].copy(), t)
                    self._maybe_update(cur, scored, i, t)
                    if a.clip:
                        a.clip.write(frame)
            elif self.announced is not None and self.announced.clip:
                self.announced.clip.write(frame)  # the quiet time after the event, until it ends
            self.n_scored += 1
        self._trim_recent()
        if self.csv_fh:
            self.csv_fh.flush()

    def _trim_recent(self) -> None:
        if not self.recent:
            return
        # the frames an event announced next may still need: its clip starts before its minimum duration
        keep_from = self.recent[-1][2] - self.cfg.live.clip_before_seconds - self.cfg.score.min_event_seconds - 1.0
        while self.recent and self.recent[0][2] < keep_from:
            self.recent.popleft()

    # -- files --------------------------------------------------------------------------------
    def _write_row(self, index: int, t: float, s: ScoredFrames, i: int) -> None:
        stamp = datetime.fromtimestamp(t).astimezone()  # local time, with its UTC offset
        day = stamp.strftime("%Y-%m-%d")
        if day != self.csv_day:
            if self.csv_fh:
                self.csv_fh.close()
            path = self.out_path / f"scores-{day}.csv"
            new = not path.exists()
            self.csv_fh = open(path, "a", newline="", encoding="utf-8")
            self.csv = csv.writer(self.csv_fh)
            if new:
                self.csv.writerow(["frame_time", "time", "frame", "score", "anomalous", *self.ens.region_ids])
            self.csv_day = day
        self.csv.writerow([f"{t:.3f}", stamp.isoformat(timespec="milliseconds"), index + 1, f"{s.score[i]:.4f}", int(s.anomalous[i]),
                           *(f"{v:.4f}" for v in s.region_z[i])])  # fmt: skip

    def _retain(self) -> None:
        """Delete the oldest events' files beyond the count, then the oldest files beyond the size."""
        live = self.cfg.live
        events: dict[str, list[Path]] = collections.defaultdict(list)
        for p in self.events_dir.glob("*") if self.events_dir.exists() else []:
            if not p.name.startswith("."):
                events[p.stem].append(p)
        order = sorted(events, key=lambda k: max(p.stat().st_mtime for p in events[k]))
        if live.keep_events and len(order) > live.keep_events:
            for k in order[: len(order) - live.keep_events]:
                for p in events.pop(k):
                    p.unlink(missing_ok=True)
            order = order[len(order) - live.keep_events :]
        if not live.keep_megabytes:
            return
        limit = live.keep_megabytes * 1e6
        today = self.out_path / f"scores-{self.csv_day}.csv"
        days = sorted(p for p in self.out_path.glob("scores-*.csv") if p != today)
        files = [events[k] for k in order] + [[p] for p in days]
        total = sum(p.stat().st_size for group in files for p in group) + (today.stat().st_size if today.exists() else 0)
        files.sort(key=lambda group: min(p.stat().st_mtime for p in group))
        while total > limit and files:
            for p in files.pop(0):
                total -= p.stat().st_size
                p.unlink(missing_ok=True)

    # -- messages -----------------------------------------------------------------------------
    def _message(self, kind: str, a: _Announced, frame_time: float, score: float, regions: list[str], end_time: float | None) -> dict[str, Any]:
        return {
            "type": kind, "id": a.id, "camera": self.camera, "start_time": round(a.start_time, 3),
            "end_time": None if end_time is None else round(end_time, 3), "frame_time": round(frame_time, 3),
            "score": round(float(score), 3), "top_score": round(float(a.top_score), 3), "threshold": round(self.ens.threshold_, 3),
            "regions": regions, "entered_regions": sorted(a.entered), "dropped_frames": self.queue.dropped,
        }  # fmt: skip

    def _regions_now(self, region_z: np.ndarray) -> list[str]:
        return [rid for rid, z in zip(self.ens.region_ids, region_z) if z > self.ens.threshold_]

    def _new(self, cur, region_z: np.ndarray, t: float) -> None:
        a = _Announced(id=f"{cur.start_s:.6f}-{secrets.token_hex(3)}", start_time=cur.start_s)
        a.entered = {self.ens.region_ids[k] for k in np.flatnonzero(np.isfinite(cur.region_peak))}
        a.top_score = cur.peak_score
        self.announced = a
        self.events_dir.mkdir(parents=True, exist_ok=True)
        a.clip = _ClipWriter(self.events_dir / f"{a.id}.mp4", self.ens.frame_size, self.cfg.extract.channels, self.fps)
        for _, before, when in self.recent:  # from clip_before_seconds before the event, up to the frame before this one
            if cur.start_s - self.cfg.live.clip_before_seconds <= when < cur.end_s:
                a.clip.write(before)
        self.sinks.send(self._message("new", a, t, float(region_z.max()), self._regions_now(region_z), None))
        a.last_update = time.monotonic()

    def _maybe_update(self, cur, scored: ScoredFrames, i: int, t: float) -> None:
        a = self.announced
        entered = {self.ens.region_ids[k] for k in np.flatnonzero(np.isfinite(cur.region_peak))}
        higher = cur.peak_score > a.top_score
        wider = not entered <= a.entered
        a.entered |= entered
        a.top_score = max(a.top_score, cur.peak_score)
        if (higher or wider) and time.monotonic() - a.last_update >= 1.0:
            self.sinks.send(self._message("update", a, t, scored.score[i], self._regions_now(scored.region_z[i]), None))
            a.last_update = time.monotonic()

    def _end(self, e: Event) -> None:
        a, self.announced = self.announced, None
        if a is None:
            return
        clip = a.clip.close() if a.clip else None
        snapshot = None
        if a.snapshot is not None:
            from pipeline.heatmaps import frame_figure, save_figure

            picture, amap, rz, t = a.snapshot
            title = f"{self.camera}  {datetime.fromtimestamp(t):%Y-%m-%d %H:%M:%S}  peak score {float(rz.max()):.2f}"
            snapshot = save_figure(frame_figure(picture, amap, self.boxes, self.ens.region_ids, rz, self.ens.threshold_, title),
                                   self.events_dir / f"{a.id}.png")  # fmt: skip
        a.entered |= set(e.regions)
        a.top_score = max(a.top_score, e.peak_score)
        msg = self._message("end", a, e.end_s, e.peak_score, [], e.end_s)
        msg.update(peak_time=round(e.peak_s, 3), snapshot=str(snapshot) if snapshot else None, clip=str(clip) if clip else None)
        self.sinks.send(msg)
        self.n_events += 1
        self._retain()

    def _discard(self) -> None:
        a, self.announced = self.announced, None
        if a and a.clip:
            a.clip.abort()


def watch(
    source: str,
    models_path: str | Path,
    out_path: str | Path,
    cfg: Config | None = None,
    camera: str | None = None,
    events_path: str | Path | None = None,
    max_seconds: float | None = None,
    realtime: bool = False,
    mqtt: str | None = None,
    webhook: str | None = None,
    device: str = "cpu",
) -> WatchSummary:
    """Score SOURCE as it arrives with the models in ``models_path`` until it ends, ``max_seconds``
    pass, or SIGINT/SIGTERM; returns what was seen. See the module's text for the messages and files."""
    t0 = time.monotonic()
    cpu0 = sum(os.times()[:4])
    ens = Ensemble.load(models_path, cfg, device)
    cfg = replace(ens.cfg, live=cfg.live) if cfg else ens.cfg  # [live] is the watch's own: the models do not record it
    # the supervised classifier's vote, as `score` adds it (score.classifier_weight)
    clf = fusion_classifier(Path(models_path).parent, cfg, device) if cfg.score.classifier_weight > 0 else None
    live = live_source(source, realtime, cfg.live.stall_seconds)
    camera = camera or camera_name(source)
    height, width = ens.frame_size
    src = ClipSource(path=Path(source), kind="video", width=width, height=height, fps=cfg.extract.fps or 10.0,
                     n_frames_estimate=0, input_url=live.url, input_options=live.options)  # fmt: skip
    sinks = Sinks([JsonLines(events_path)] + ([Mqtt(mqtt, cfg.live.mqtt_prefix, camera)] if mqtt else [])
                  + ([Webhook(webhook, cfg.live.webhook_retries)] if webhook else []))  # fmt: skip
    stop = threading.Event()
    # a file read as fast as possible waits for the scorer; anything live drops its oldest frames
    queue = FrameQueue(max(8, int(cfg.live.queue_seconds * 30)), wait=live.is_file and not realtime)  # up to 30 fps
    out_path = Path(out_path)

    def status(state: str, **extra: Any) -> None:
        sinks.send({"type": "status", "camera": camera, "status": state, "time": round(time.time(), 3), "dropped_frames": queue.dropped,
                    "reconnects": feed.reconnects, **extra})  # fmt: skip

    feed = _Feed(src, live, cfg, queue, status, stop)
    restore = _on_signals(stop)
    try:
        with new_folder(out_path):
            remove_stale_temporaries(out_path / "events")
            watcher = _Watcher(ens, cfg, out_path, camera, sinks, queue, clf)
            feed.start()
            deadline = time.monotonic() + max_seconds if max_seconds else math.inf
            stalled = False
            while True:
                items = queue.take(timeout=0.2)
                if items:
                    watcher.push(items)
                    stalled = False
                # the watchdog: no frame (or no connection) for stall_seconds, so ffmpeg is ended and the feed
                # reconnects; before the first frame ever, the feed then reports the source as unusable
                idle, proc = time.monotonic() - feed.last_activity, feed.proc
                if proc is not None and proc.poll() is None and idle > cfg.live.stall_seconds:
                    if feed.ever_connected and not stalled:
                        stalled = True
                        status("stalled", seconds_without_frames=round(idle, 1))
                    feed.kill()
                if stop.is_set() or time.monotonic() > deadline or (queue.closed and not items):
                    break
            stop.set()
            feed.kill()
            queue.close()
            feed.join(timeout=30)
            if feed.crash is not None:
                raise feed.crash
            if feed.error is not None and not watcher.n_in:
                raise feed.error
            watcher.push(queue.take(timeout=0))
            watcher.finish()
            if feed.ever_connected:
                status("offline")
    finally:
        stop.set()
        feed.kill()
        restore()
        sinks.close()
    cpu = os.times()
    return WatchSummary(camera, watcher.n_scored, watcher.n_events, queue.dropped, feed.reconnects, time.monotonic() - t0,
                        cpu.user + cpu.system + cpu.children_user + cpu.children_system - cpu0, out_path)  # fmt: skip


def _on_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGINT and SIGTERM end the watch cleanly (an open event gets its end); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda signum, frame: stop.set())

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)

    return restore
