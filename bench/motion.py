"""The no-learning floor: each region's mean absolute frame difference, z-scored, max over regions.

Each region's score for frame t is the mean of |frame t - frame t-1| over its
pixels (frame 1 repeats frame 2's value). Means and standard deviations come
from the training clips; the frame score is the maximum z over regions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cuboids.grid import make_grid
from pipeline.config import Config
from pipeline.ffmpeg_io import list_clips, open_clip, read_frames, working_size


def region_motion(path: Path, cfg: Config) -> np.ndarray:
    """Mean absolute frame difference per frame and region ``(n_frames, R)``."""
    src = open_clip(path, cfg.extract)
    w, h = working_size(src, cfg.extract)
    regions = make_grid(h, w, cfg.cuboids)
    frames = np.concatenate(list(read_frames(src, cfg.extract))).astype(np.float32)[..., 0]
    diff = np.abs(np.diff(frames, axis=0))
    out = np.stack([diff[:, r.box[0], r.box[1]].mean(axis=(1, 2)) for r in regions], axis=1)
    return np.concatenate([out[:1], out])


class MotionBaseline:
    def __init__(self, cfg: Config):
        self.cfg = cfg

    def fit(self, clips_path: Path) -> "MotionBaseline":
        values = np.concatenate([region_motion(p, self.cfg) for p in list_clips(clips_path)])
        self.mean_ = values.mean(axis=0)
        self.std_ = np.maximum(values.std(axis=0), 1e-6)
        return self

    def score(self, path: Path) -> np.ndarray:
        z = (region_motion(path, self.cfg) - self.mean_) / self.std_
        return z.max(axis=1)
