"""Time windows: which frames of a tube make each cuboid.

A window of T frames starting at frame s covers frames ``s .. s + T - 1``;
windows are never stored, only their start frames (and, for frame
differences, a window also carries the frame before it).
"""

from __future__ import annotations

import numpy as np


def window_starts(n_frames: int, clip_length: int, stride: int) -> np.ndarray:
    """Start frames of the full windows ``[s, s + clip_length)`` every ``stride`` frames."""
    if n_frames < clip_length:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_frames - clip_length + 1, stride, dtype=np.int64)


def window_index(starts: np.ndarray, clip_length: int, with_previous: bool = False, first: int = 0, last: int | None = None) -> np.ndarray:
    """Frame indices of windows starting at ``starts``: ``(n_windows, T)``, or ``T + 1`` with the frame before.

    Indices are clamped to ``[first, last]`` (a clip's first and last frame), so a
    window at the clip's first frame uses that frame as its own predecessor.
    """
    offsets = np.arange(-1 if with_previous else 0, clip_length)
    idx = np.asarray(starts, dtype=np.int64)[:, None] + offsets[None, :]
    return np.clip(idx, first, last if last is not None else idx.max(initial=0))


def gather_windows(tube: np.ndarray, starts: np.ndarray, clip_length: int, with_previous: bool = False) -> np.ndarray:
    """Cuboids of one clip's tube: ``(n_windows, T[+1], C, P, P)`` uint8 (see :func:`window_index`)."""
    return tube[window_index(starts, clip_length, with_previous, 0, len(tube) - 1)]
