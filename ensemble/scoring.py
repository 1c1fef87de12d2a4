"""Sliding windows over a stream of region tubes -> per-frame pixel errors.

Windows of T frames start every S frames (0, S, 2S, …). A frame's pixel
error is the mean of its error in every such window that covers it. Frames
after the last full window (when the clip length is not a multiple of S) are
covered by one extra window aligned to the end of the clip, used for those
frames only. So which windows score which frame depends only on the clip's
length, never on how the stream was chunked, and a frame is final as soon as
no later window can cover it: the latency is at most T frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cuboids.slicing import TubeCutter, gather_windows
from ensemble.fusion import CausalMean, fuse, normalise, region_errors
from pipeline.errors import InputError

if TYPE_CHECKING:
    from ensemble.ensemble import Ensemble

# windows uint8 (R, B, T[+1], C, P, P) -> pixel errors float32 (R, B, T, P, P)
ErrorFn = Callable[[np.ndarray], np.ndarray]


class SlidingWindowScorer:
    """Push tubes ``(R, n, C, P, P)`` uint8 chunk by chunk; get back finished frames' pixel errors.

    ``needs_previous``: windows carry the frame before them (for frame
    differences); the first frame of the clip stands in for its own predecessor.
    """

    def __init__(self, error_fn: ErrorFn, clip_length: int, stride: int, needs_previous: bool = False, batch_windows: int = 64):
        if not 1 <= stride <= clip_length:
            raise ValueError(f"stride {stride} must be in 1..clip_length ({clip_length})")
        self.error_fn = error_fn
        self.T = clip_length
        self.S = stride
        self.needs_previous = needs_previous
        self.batch_windows = batch_windows
        self.buf: np.ndarray | None = None  # frames [buf_start, n_seen)
        self.buf_start = 0
        self.n_seen = 0
        self.next_start = 0  # next regular window
        self.emit_from = 0  # first frame not yet returned
        self.acc_sum: np.ndarray | None = None  # (R, frames from emit_from, P, P)
        self.acc_cnt = np.zeros(0, dtype=np.int32)

    def push(self, tubes: np.ndarray) -> np.ndarray:
        """Add frames; returns pixel errors ``(k, R, P, P)`` of the k frames now final."""
        if tubes.shape[1] == 0:
            return self._empty(tubes)
        self.buf = tubes if self.buf is None else np.concatenate([self.buf, tubes], axis=1)
        self.n_seen += tubes.shape[1]
        starts = []
        while self.next_start + self.T <= self.n_seen:
            starts.append(self.next_start)
            self.next_start += self.S
        self._run(np.asarray(starts, dtype=np.int64), frames_from=None)
        out = self._emit(upto=min(self.next_start, self.n_seen))
        # keep what the next regular window and a possible end-aligned window need,
        # plus one frame before them for frame differences
        keep_from = max(0, self.next_start - self.S - 1)
        self.buf = self.buf[:, keep_from - self.buf_start :]
        self.buf_start = keep_from
        return out

    def finish(self) -> np.ndarray:
        """Score the frames no regular window reached; returns the remaining frames' errors."""
        if self.n_seen < self.T:
            raise InputError(f"clip has {self.n_seen} frames, shorter than one window ({self.T} frames)")
        tail = self.n_seen - self.T
        uncovered_from = self.next_start - self.S + self.T  # frames from here on were in no regular window
        if uncovered_from < self.n_seen:
            self._run(np.array([tail], dtype=np.int64), frames_from=uncovered_from)
        return self._emit(upto=self.n_seen)

    def _run(self, starts: np.ndarray, frames_from: int | None) -> None:
        if len(starts) == 0:
            return
        self._grow_acc()
        for i in range(0, len(starts), self.batch_windows):
            batch = starts[i : i + self.batch_windows]
            windows = self._windows(batch)
            errors = np.asarray(self.error_fn(windows), dtype=np.float32)  # (R, B, T, P, P)
            for b, s in enumerate(batch):
                first = s if frames_from is None else max(s, frames_from)
                lo, hi = first - self.emit_from, s + self.T - self.emit_from
                self.acc_sum[:, lo:hi] += errors[:, b, first - s :]
                self.acc_cnt[lo:hi] += 1

    def _windows(self, starts: np.ndarray) -> np.ndarray:
        # buf_start is 0 or at least one frame before any window still to run, so the
        # clamping in gather_windows only ever makes frame 0 its own predecessor
        rel = starts - self.buf_start
        return np.stack([gather_windows(tube, rel, self.T, self.needs_previous) for tube in self.buf])

    def _grow_acc(self) -> None:
        R, _, C, P, _ = self.buf.shape
        need = self.n_seen - self.emit_from
        if self.acc_sum is None:
            self.acc_sum = np.zeros((R, need, P, P), dtype=np.float32)
            self.acc_cnt = np.zeros(need, dtype=np.int32)
        elif self.acc_sum.shape[1] < need:
            extra = need - self.acc_sum.shape[1]
            self.acc_sum = np.concatenate([self.acc_sum, np.zeros((R, extra, P, P), np.float32)], axis=1)
            self.acc_cnt = np.concatenate([self.acc_cnt, np.zeros(extra, np.int32)])

    def _emit(self, upto: int) -> np.ndarray:
        k = upto - self.emit_from
        if k <= 0 or self.acc_sum is None:
            return self._empty(self.buf)
        done = self.acc_sum[:, :k] / self.acc_cnt[None, :k, None, None]
        self.acc_sum = self.acc_sum[:, k:]
        self.acc_cnt = self.acc_cnt[k:]
        self.emit_from = upto
        return np.ascontiguousarray(done.transpose(1, 0, 2, 3))

    @staticmethod
    def _empty(like: np.ndarray) -> np.ndarray:
        R, _, _, P, _ = like.shape
        return np.zeros((0, R, P, P), dtype=np.float32)


def score_tubes(error_fn: ErrorFn, tubes: np.ndarray, clip_length: int, stride: int, needs_previous: bool, chunk_frames: int = 0) -> np.ndarray:
    """All of one clip's frames at once: tubes ``(R, n, C, P, P)`` -> pixel errors ``(n, R, P, P)``."""
    scorer = SlidingWindowScorer(error_fn, clip_length, stride, needs_previous)
    step = chunk_frames or tubes.shape[1]
    parts = [scorer.push(tubes[:, i : i + step]) for i in range(0, tubes.shape[1], step)]
    parts.append(scorer.finish())
    return np.concatenate(parts)


@dataclass
class ScoredFrames:
    """Scores of consecutive frames ``first .. first + n - 1`` (0-based)."""

    first: int
    region_errors: np.ndarray  # (n, R) after smoothing
    z: np.ndarray  # (n, R) normalised region errors
    score: np.ndarray  # (n,) fused frame score
    anomalous: np.ndarray  # (n,) bool: some region above its threshold
    pixel_errors: np.ndarray  # (n, R, P, P)

    def __len__(self) -> int:
        return len(self.score)


class ClipScorer:
    """The whole scoring chain for one clip, fed raw frames chunk by chunk.

    frames -> region crops -> sliding windows through every region's model ->
    per-frame pixel errors -> region errors -> causal smoothing -> z -> fusion.
    """

    def __init__(self, ensemble: "Ensemble", batch_windows: int = 64):
        cfg = ensemble.cfg
        self.ensemble = ensemble
        self.cfg = cfg
        self.windows = SlidingWindowScorer(
            ensemble.pixel_errors,
            cfg.cuboids.clip_length_in_frames,
            cfg.score.frames_between_clips,
            ensemble.needs_previous,
            batch_windows,
        )
        self.cut = TubeCutter.for_config(ensemble.regions, cfg)
        self.smooth = CausalMean(cfg.score.smoothing_frames)
        self.mean = ensemble.stat("mean")
        self.std = ensemble.stat("std")
        self.n_done = 0

    def push(self, frames: np.ndarray) -> ScoredFrames:
        """frames uint8 ``(n, H, W, C)`` at the models' working size."""
        return self.push_tubes(self.cut(frames))

    def push_tubes(self, tubes: np.ndarray) -> ScoredFrames:
        """The next frames' region tubes ``(R, n, C, P, P)``, cut by ``self.cut`` in frame order."""
        return self._post(self.windows.push(tubes))

    def finish(self) -> ScoredFrames:
        return self._post(self.windows.finish())

    def _post(self, pixel: np.ndarray) -> ScoredFrames:
        s = self.cfg.score
        errors = self.smooth(region_errors(pixel, s.region_score, s.region_patch))
        z = normalise(errors, self.mean, self.std)
        score, anomalous = fuse(z, s)
        out = ScoredFrames(self.n_done, errors, z, score, anomalous, pixel)
        self.n_done += len(pixel)
        return out
