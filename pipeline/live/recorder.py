"""An event's clip: an MP4 from ``live.clip_before_seconds`` before its first flagged frame to its end, written as frames come."""

from __future__ import annotations

import collections
import logging
from pathlib import Path

import numpy as np

from cuboid_ad.core.errors import UserError
from cuboid_ad.pipeline.media.encode import Mp4Writer

log = logging.getLogger(__name__)


class ClipRecorder:
    """Keeps the last ``keep_seconds`` of frames, so that a clip can start before its event was known, and writes one clip at a time."""

    def __init__(self, folder: Path, frame_size: tuple[int, int], channels: int, before_seconds: float, keep_seconds: float):
        self.folder, self.frame_size, self.channels = folder, frame_size, channels
        self.before, self.keep = before_seconds, keep_seconds
        self.recent: collections.deque[tuple[np.ndarray, float]] = collections.deque()  # (frame, time)
        self.clip: Mp4Writer | None = None

    def remember(self, frame: np.ndarray, t: float) -> None:
        """A frame just scored, at its time ``t``; frames older than ``keep_seconds`` before it are let go."""
        self.recent.append((frame, t))
        while self.recent and self.recent[0][1] < t - self.keep:
            self.recent.popleft()

    def start(self, name: str, start_s: float, until_s: float, fps: float) -> None:
        """Begin ``name``.mp4 with the frames remembered from ``before_seconds`` before ``start_s`` up to ``until_s`` (not included)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.clip = Mp4Writer(self.folder / f"{name}.mp4", self.frame_size, self.channels, fps)
        for frame, when in self.recent:
            if start_s - self.before <= when < until_s:
                self.clip.write(frame)

    def write(self, frame: np.ndarray) -> None:
        if self.clip is not None:
            self.clip.write(frame)

    def close(self) -> Path | None:
        """The clip, in place; None (and a warning) when ffmpeg could not write it."""
        clip, self.clip = self.clip, None
        if clip is None:
            return None
        try:
            return clip.close()
        except UserError as exc:
            log.warning("the event's clip could not be written: %s", exc)
            return None

    def abort(self) -> None:
        clip, self.clip = self.clip, None
        if clip is not None:
            clip.abort()
