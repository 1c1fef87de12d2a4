"""The live source: ffmpeg on a camera URL, a device, standard input or a file, and the queue of its frames.

A helper thread (:class:`Feed`) runs ffmpeg on the source and puts each decoded
frame, with its wall-clock time, in a bounded queue (:class:`FrameQueue`) that
drops the oldest frames when scoring falls behind. A lost network stream is
reconnected after 1 s, doubling up to ``live.reconnect_max_seconds``; the
watchdog that restarts a stalled one is the watch loop's (``pipeline.live.watch``).
"""

from __future__ import annotations

import collections
import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import InputError
from cuboid_ad.pipeline.media.decode import ClipSource, read_frames

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


class Feed(threading.Thread):
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
        self.input_codec = ""  # the connection's video codec as ffmpeg names it (the tube cutter asks: see ScoringSession.restart)
        self.lock = threading.Lock()

    def _on_ffmpeg(self, proc: subprocess.Popen) -> None:
        with self.lock:
            self.proc = proc
        if self.stop.is_set():
            self.kill()

    def _on_input(self, size: tuple[int, int] | None, codec: str) -> None:
        """Keep the connection's size and codec; warn when the source's shape differs from the models' frames: it is stretched to fit them."""
        self.input_size, self.input_codec = size, codec
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
                                     on_input=self._on_input)  # fmt: skip
                for frames, times in chunks:
                    if anchor is None:
                        anchor = time.time() - float(times[0])
                        self.ever_connected, delay = True, 1.0
                        self.status("online", source_size=list(self.input_size) if self.input_size else None)
                    self.last_activity = time.monotonic()
                    self.frames.put((frames[0], anchor + float(times[0]), self.segment, self.input_codec))
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
