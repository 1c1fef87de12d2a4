"""No-learning floors, printed beside the model by ``bench.quality``.

``motion``: each region's mean absolute frame difference, z-scored, max over
regions. Each region's score for frame t is the mean of |frame t - frame t-1|
over its pixels (frame 1 repeats frame 2's value).

``speed``: the scoring chain the models had when this floor was first printed
(commit 2f98d8e) with the autoencoder replaced by a constant prediction of
"nothing moves". A pixel's error is then its squared optical-flow code offset
(what a flow model's error would be if it rebuilt every window as still); a
region's error is the largest mean over 4 x 4-pixel patches, averaged over the
last 5 frames, then z against the training clips and the maximum over regions.
Those settings are fixed here, not taken from ``[score]``: the floor stays the
one the README has always compared against (its strongest form on the tuning
sets), whatever the models' chain becomes. It measures how much the models add
to the speed of their input.

Means and standard deviations of both come from every frame of the training
clips; each floor's alarm threshold is the score that ``score.false_alarm_rate``
of those frames exceed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cuboid_ad.core.config import Config
from cuboid_ad.core.grid import Region, make_grid
from cuboid_ad.core.tubes import FLOW_ZERO
from cuboid_ad.cuboids.slicing import TubeCutter
from cuboid_ad.ensemble.detector import encode_windows
from cuboid_ad.ensemble.fusion import alarm_threshold, region_errors
from cuboid_ad.ensemble.streams.base import CausalMean
from cuboid_ad.pipeline.media.decode import list_clips, open_clip, read_frames, working_size

SPEED_PATCH, SPEED_SMOOTHING = 4, 5  # the speed floor's region rule (see the module doc)


def _frames(path: Path, cfg: Config) -> tuple[np.ndarray, list[Region]]:
    """A clip's frames at the working size, and the config's grid on them."""
    src = open_clip(path, cfg.extract)
    w, h = working_size(src, cfg.extract)
    return np.concatenate(list(read_frames(src, cfg.extract))), make_grid(h, w, cfg.cuboids)


def region_motion(path: Path, cfg: Config) -> np.ndarray:
    """Mean absolute frame difference per frame and region ``(n_frames, R)``."""
    frames, regions = _frames(path, cfg)
    diff = np.abs(np.diff(frames.astype(np.float32)[..., 0], axis=0))
    out = np.stack([diff[:, r.box[0], r.box[1]].mean(axis=(1, 2)) for r in regions], axis=1)
    return np.concatenate([out[:1], out])


def region_speed(path: Path, cfg: Config) -> np.ndarray:
    """The "nothing moves" predictor's region errors per frame ``(n_frames, R)``, smoothed as the model's are."""
    frames, regions = _frames(path, cfg)
    # the tubes a flow model of this config sees, whatever the config's own input
    # the floor as it has always been: no camera corrections, whatever the models' config
    plain = cfg.with_overrides(model={"input": "flow"}, cuboids={"camera_corrections": False})
    tubes = TubeCutter.for_config(regions, plain)(frames)  # (R, n, 2, P, P)
    # a model that rebuilds every window as still has, at each pixel, the error of the input's
    # distance from "no motion", on the model's input scale (ensemble.detector.encode_windows)
    still = encode_windows(np.full((1, 1, 2, 1, 1), FLOW_ZERO, np.uint8), "flow")
    x = encode_windows(tubes.transpose(1, 0, 2, 3, 4), "flow")  # (n, 2, R, P, P): R stands in for time
    pixel = ((x - still) ** 2).mean(dim=1).numpy()  # (n, R, P, P), channel mean as in the model's error
    return CausalMean(SPEED_SMOOTHING)(region_errors(pixel, "patch_max", SPEED_PATCH))


class Baseline:
    """Per-region z of a no-learning per-frame measure, max over regions, with PyOD's contract:
    ``X`` is a measure's values ``(n_frames, R)`` (:func:`region_motion`, :func:`region_speed`)."""

    def __init__(self, false_alarm_rate: float):
        self.false_alarm_rate = false_alarm_rate

    def fit(self, X: np.ndarray) -> "Baseline":
        """Normal frames' values ``(n, R)``: each region's mean and spread, and the alarm threshold."""
        self.mean_ = X.mean(axis=0)
        self.std_ = np.maximum(X.std(axis=0), 1e-9)
        self.decision_scores_ = self.decision_function(X)
        self.threshold_ = alarm_threshold(self.decision_scores_, self.false_alarm_rate)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Values ``(n, R)`` -> ``(n,)``: the largest region z, higher = more anomalous."""
        return ((X - self.mean_) / self.std_).max(axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.decision_function(X) > self.threshold_).astype(np.int64)


def fit_baseline(name: str, clips_path: Path, cfg: Config) -> Baseline:
    """The floor ``name`` fitted on every clip of ``clips_path``."""
    return Baseline(cfg.score.false_alarm_rate).fit(np.concatenate([BASELINES[name](p, cfg) for p in list_clips(clips_path)]))


BASELINES = {"motion": region_motion, "speed": region_speed}
