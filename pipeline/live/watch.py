"""Stage 7, watch: a live stream scored as it arrives, its events sent as messages.

The feed (``pipeline.live.feed``) decodes the source in a helper thread into a
bounded queue; the main thread scores what is queued with the same scoring
session as ``score`` (``pipeline.scoring.session``), so a file gives the same
per-frame scores either way, and turns flagged frames into events with the same
rule. A watchdog restarts ffmpeg when no frame has come for ``live.stall_seconds``.

Messages: an event's ``new``, ``update`` and ``end`` (``pipeline.live.lifecycle``),
and ``status`` (``online``, ``stalled``, ``reconnecting``, ``offline``) when the
stream changes state. Files in ``out_path``: ``scores-YYYY-MM-DD.csv`` and
``events/<id>.png``, ``events/<id>.mp4``, the oldest deleted beyond
``live.keep_events`` or ``live.keep_megabytes`` (``pipeline.live.retention``).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cuboid_ad.core.artifacts import new_folder, remove_stale_temporaries
from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import InputError
from cuboid_ad.core.frames import measured_fps
from cuboid_ad.core.runtime import signals_set
from cuboid_ad.ensemble.ensemble import Ensemble, ScoredFrames
from cuboid_ad.pipeline.live.feed import Feed, FrameQueue, camera_name, live_source
from cuboid_ad.pipeline.live.lifecycle import EventLifecycle, TamperLifecycle
from cuboid_ad.pipeline.live.recorder import ClipRecorder
from cuboid_ad.pipeline.live.retention import DailyScores, retain
from cuboid_ad.pipeline.live.sinks import JsonLines, Mqtt, Sinks, Webhook
from cuboid_ad.pipeline.media.decode import ClipSource
from cuboid_ad.pipeline.scoring.session import ScoringSession, open_session

__all__ = ["FrameQueue", "WatchSummary", "camera_name", "live_source", "watch"]

log = logging.getLogger(__name__)


@dataclass
class WatchSummary:
    camera: str
    frames: int
    events: int
    dropped: int
    tampers: int
    reconnects: int
    seconds: float
    cpu_seconds: float  # this process and its ffmpeg decoders
    out_path: Path
    messages_dropped: int = 0  # by the webhook: its queue full, or every try failed


class Watcher:
    """The scoring side of one watch: queued frames through the session, then per frame the scores file, the event
    lifecycle and the clip recorder. A new connection (segment) restarts the session's windows, not its events."""

    def __init__(self, session: ScoringSession, cfg: Config, out_path: Path, camera: str, sinks: Sinks, frames: FrameQueue):
        ens = session.ens
        self.session, self.cfg, self.out_path, self.queue = session, cfg, out_path, frames
        self.events_dir = out_path / "events"
        self.daily = DailyScores(out_path, ens.region_ids, ens.stream_names)
        s, live = cfg.score, cfg.live
        # the frames an event announced next may still need: its clip starts before its minimum duration
        self.recorder = ClipRecorder(self.events_dir, ens.frame_size, cfg.extract.channels, live.clip_before_seconds,
                                     live.clip_before_seconds + s.min_event_seconds + s.event_gap_seconds)  # fmt: skip
        self.lifecycle = EventLifecycle(camera, ens, sinks.send, self.recorder, lambda: frames.dropped)
        self.tamper = TamperLifecycle(camera, sinks.send, lambda: frames.dropped)
        self.fps = cfg.extract.fps or 10.0  # until the frames' times tell
        session.set_fps(self.fps)
        self.segment = -1
        self.n_in = 0  # frames handed to the session, all segments
        self.n_scored = 0
        self.pending: collections.deque = collections.deque()  # (index, frame) handed in, not yet scored
        self.times: collections.deque = collections.deque(maxlen=50)

    @property
    def n_events(self) -> int:
        return self.lifecycle.n_events

    @property
    def n_tampers(self) -> int:
        return self.tamper.n_events

    def push(self, items: list) -> None:
        """Queued ``(frame, time, segment, codec)`` items, in order."""
        run: list = []
        for item in items:
            if item[2] != self.segment:
                self._score_run(run)
                run = []
                self._finish_segment()
                self.segment = item[2]
                self.session.restart(item[3])
            run.append(item)
        self._score_run(run)

    def _score_run(self, run: list) -> None:
        if not run:
            return
        frames = np.stack([item[0] for item in run])
        times = np.array([item[1] for item in run])
        for f, t, *_ in run:
            self.pending.append((self.n_in, f))
            self.times.append(t)
            self.n_in += 1
        self.fps = measured_fps(np.array(self.times), self.fps)
        self.session.set_fps(self.fps)
        self._handle(self.session.score(self.session.prepare(frames), times))

    def _finish_segment(self) -> None:
        """Score the last frames of a connection's stream."""
        if self.segment < 0:
            return
        try:
            self._handle(self.session.flush())
        except InputError:  # fewer frames than one window: nothing to score them with
            log.warning("%s: %d frames before the stream was lost, too few to score", self.lifecycle.camera, len(self.pending))
            self.pending.clear()

    def finish(self) -> None:
        self._finish_segment()
        for e in self.session.finish():
            self._end(e)
        if self.lifecycle.announced is not None:  # too short to count after all: nothing to end
            self.lifecycle.discard()
        self.daily.close()

    def _handle(self, scored: ScoredFrames) -> None:
        for i in range(len(scored)):
            index, frame = self.pending.popleft()
            t = float(scored.times[i])
            self.daily.write(index, t, scored, i)
            self.recorder.remember(frame, t)
            row = scored.rows(i, i + 1)
            for e in self.session.track(row):
                self._end(e)
            self.lifecycle.step(self.session.events, scored, i, frame, t, self.fps, lambda: self.session.anomaly_maps(row)[0])
            self.tamper.step(self.session.tampers, frame, t, scored.tamper[i])
            self.n_scored += 1
        self.daily.flush()

    def reload(self, session: ScoringSession) -> None:
        """Go on with other models (a new version, ``train --update``): the frames handed to the old ones are scored
        by them first and their open events end, then every next frame goes to ``session``; no frame is dropped."""
        self._finish_segment()
        for e in self.session.finish():
            self._end(e)
        if self.lifecycle.announced is not None:
            self.lifecycle.discard()
        self.session = session
        session.set_fps(self.fps)
        self.segment = -1  # the next frame starts the new models' windows
        old, old_tamper = self.lifecycle, self.tamper
        self.lifecycle = EventLifecycle(old.camera, session.ens, old.send, self.recorder, old.dropped)
        self.tamper = TamperLifecycle(old_tamper.camera, old_tamper.send, old_tamper.dropped)
        self.lifecycle.n_events, self.tamper.n_events = old.n_events, old_tamper.n_events

    def _end(self, e) -> None:
        ended = self.tamper.end(e, self.events_dir) if e.kind == "tamper" else self.lifecycle.end(e, self.events_dir)
        if ended:
            retain(self.out_path, self.events_dir, self.cfg.live, self.daily.today)


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
    live = live_source(source, realtime, cfg.live.stall_seconds)
    camera = camera or camera_name(source)
    height, width = ens.frame_size
    src = ClipSource(path=Path(source), kind="video", width=width, height=height, fps=cfg.extract.fps or 10.0,
                     n_frames_estimate=0, input_url=live.url, input_options=live.options)  # fmt: skip
    # the supervised classifier's vote, as `score` adds it (score.classifier_weight)
    session = open_session(ens, models_path, src.fps, device)
    sinks = Sinks([JsonLines(events_path)] + ([Mqtt(mqtt, cfg.live.mqtt_prefix, camera)] if mqtt else [])
                  + ([Webhook(webhook, cfg.live.webhook_retries)] if webhook else []))  # fmt: skip
    stop = threading.Event()
    # a file read as fast as possible waits for the scorer; anything live drops its oldest frames
    queue = FrameQueue(max(8, int(cfg.live.queue_seconds * 30)), wait=live.is_file and not realtime)  # up to 30 fps
    out_path = Path(out_path)

    def status(state: str, **extra: Any) -> None:
        sinks.send({"type": "status", "camera": camera, "status": state, "time": round(time.time(), 3), "dropped_frames": queue.dropped,
                    "reconnects": feed.reconnects, **extra})  # fmt: skip

    feed = Feed(src, live, cfg, queue, status, stop)
    try:
        with signals_set(stop), new_folder(out_path):
            remove_stale_temporaries(out_path / "events")
            watcher = Watcher(session, cfg, out_path, camera, sinks, queue)
            feed.start()
            deadline = time.monotonic() + max_seconds if max_seconds else math.inf
            stalled = False
            manifest = Path(models_path) / "manifest.json"
            models_seen, next_look = manifest.stat().st_mtime_ns, time.monotonic() + 1.0
            while True:
                items = queue.take(timeout=0.2)
                if items:
                    watcher.push(items)
                    stalled = False
                if time.monotonic() > next_look:  # a new version of the models (train --update): taken up without a restart
                    next_look = time.monotonic() + 1.0
                    if manifest.exists() and manifest.stat().st_mtime_ns != models_seen:
                        models_seen = manifest.stat().st_mtime_ns
                        ens = Ensemble.load(models_path, device=device)
                        watcher.reload(open_session(ens, models_path, src.fps, device))
                        status("models", version=ens.version)
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
        sinks.close()
    cpu = os.times()
    return WatchSummary(camera, watcher.n_scored, watcher.n_events, queue.dropped, watcher.n_tampers, feed.reconnects, time.monotonic() - t0,
                        cpu.user + cpu.system + cpu.children_user + cpu.children_system - cpu0, out_path,
                        sum(getattr(s, "dropped", 0) for s in sinks.sinks))  # fmt: skip
