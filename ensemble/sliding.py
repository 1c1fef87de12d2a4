"""Sliding windows over a stream of region tubes -> per-frame maps (errors, reconstructions).

Windows of T frames start every S frames (0, S, 2S, …). A frame's map is the
mean of its map in every such window that covers it. Frames after the last
full window (when the clip length is not a multiple of S) are covered by one
extra window aligned to the end of the clip, used for those frames only. So
which windows score which frame depends only on the clip's length, never on
how the stream was chunked, and a frame is final as soon as no later window
can cover it: the latency is at most T frames.

Region-agnostic: each region contributes a function from its windows to their
maps; one region (calibration) and a whole grid (scoring) use the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from cuboid_ad.core.errors import InputError
from cuboid_ad.core.windows import gather_windows

# one region's model step: windows uint8 (B, T[+1], C, P, P) -> maps float32 (B, T, K, P, P)
WindowFn = Callable[[np.ndarray], np.ndarray]


class SlidingWindowScorer:
    """Push tubes ``(R, n, C, P, P)`` uint8 chunk by chunk; get back finished frames' maps ``(k, R, K, P, P)``.

    ``window_fns``: one per region, in the tubes' order, each giving ``n_maps`` maps. ``needs_previous``:
    windows carry the frame before them (for frame differences); the first
    frame of the clip stands in for its own predecessor.
    """

    def __init__(
        self, window_fns: Sequence[WindowFn], n_maps: int, clip_length: int, stride: int, needs_previous: bool = False, batch_windows: int = 64
    ):
        if not 1 <= stride <= clip_length:
            raise ValueError(f"stride {stride} must be in 1..clip_length ({clip_length})")
        self.window_fns = list(window_fns)
        self.T = clip_length
        self.S = stride
        self.needs_previous = needs_previous
        self.batch_windows = batch_windows
        self.buf: np.ndarray | None = None  # frames [buf_start, n_seen)
        self.buf_start = 0
        self.n_seen = 0
        self.next_start = 0  # next regular window
        self.emit_from = 0  # first frame not yet returned
        self.acc_sum: np.ndarray | None = None  # (R, frames from emit_from, K, P, P)
        self.acc_cnt = np.zeros(0, dtype=np.int32)
        self.n_maps = n_maps

    def push(self, tubes: np.ndarray) -> np.ndarray:
        """Add frames; returns the maps ``(k, R, K, P, P)`` of the k frames now final."""
        if len(tubes) != len(self.window_fns):
            raise ValueError(f"{len(tubes)} region tubes for {len(self.window_fns)} window functions")
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
        """Score the frames no regular window reached; returns the remaining frames' maps."""
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
        for i in range(0, len(starts), self.batch_windows):
            batch = starts[i : i + self.batch_windows]
            rel = batch - self.buf_start
            # buf_start is 0 or at least one frame before any window still to run, so the
            # clamping in gather_windows only ever makes frame 0 its own predecessor
            maps = np.stack([np.asarray(fn(gather_windows(tube, rel, self.T, self.needs_previous)), dtype=np.float32)
                             for fn, tube in zip(self.window_fns, self.buf)])  # (R, B, T, K, P, P)
            self._grow_acc()
            for b, s in enumerate(batch):
                first = s if frames_from is None else max(s, frames_from)
                lo, hi = first - self.emit_from, s + self.T - self.emit_from
                self.acc_sum[:, lo:hi] += maps[:, b, first - s :]
                self.acc_cnt[lo:hi] += 1

    def _grow_acc(self) -> None:
        R, _, _, P, _ = self.buf.shape
        n_maps = self.n_maps
        need = self.n_seen - self.emit_from
        if self.acc_sum is None:
            self.acc_sum = np.zeros((R, need, n_maps, P, P), dtype=np.float32)
            self.acc_cnt = np.zeros(need, dtype=np.int32)
        elif self.acc_sum.shape[1] < need:
            extra = need - self.acc_sum.shape[1]
            self.acc_sum = np.concatenate([self.acc_sum, np.zeros((R, extra, n_maps, P, P), np.float32)], axis=1)
            self.acc_cnt = np.concatenate([self.acc_cnt, np.zeros(extra, np.int32)])

    def _emit(self, upto: int) -> np.ndarray:
        k = upto - self.emit_from
        if k <= 0 or self.acc_sum is None:
            return self._empty(self.buf)
        done = self.acc_sum[:, :k] / self.acc_cnt[None, :k, None, None, None]
        self.acc_sum = self.acc_sum[:, k:]
        self.acc_cnt = self.acc_cnt[k:]
        self.emit_from = upto
        return np.ascontiguousarray(done.transpose(1, 0, 2, 3, 4))

    def _empty(self, like: np.ndarray) -> np.ndarray:
        R, _, _, P, _ = like.shape
        return np.zeros((0, R, self.n_maps, P, P), dtype=np.float32)


def score_tubes(
    window_fns: Sequence[WindowFn], n_maps: int, tubes: np.ndarray, clip_length: int, stride: int, needs_previous: bool, chunk_frames: int = 0
) -> np.ndarray:
    """All of one clip's frames at once: tubes ``(R, n, C, P, P)`` -> maps ``(n, R, K, P, P)``."""
    scorer = SlidingWindowScorer(window_fns, n_maps, clip_length, stride, needs_previous)
    step = chunk_frames or tubes.shape[1]
    parts = [scorer.push(tubes[:, i : i + step]) for i in range(0, tubes.shape[1], step)]
    parts.append(scorer.finish())
    return np.concatenate(parts)
