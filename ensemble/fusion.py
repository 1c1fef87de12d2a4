"""From per-frame pixel errors to region errors, normalised scores and the frame score.

For every frame and region:

1. region error: the mean of the region's pixel errors in that frame
   (``region_score = "mean"``), or the largest mean over ``region_patch``-sized
   patches (``"patch_max"``), which keeps a small anomaly from being averaged
   away in a large region;
2. optionally a causal moving average over the last ``smoothing_frames`` frames;
3. normalised error ``z = (error - mean) / std`` against the region's errors on
   normal frames (``calibrate_on``), so that regions with busy and quiet content compare;
4. frame score = the maximum of ``z`` over regions (``fusion = "max"``), or the
   mean; the frame is anomalous when any region's error exceeds its threshold
   ``mean + threshold_sigma * std``, i.e. when ``max z > threshold_sigma``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from core.config import ScoreConfig

PERCENTILES = (50, 90, 95, 99, 99.9)


def region_errors(pixel_errors: np.ndarray, rule: str, patch: int) -> np.ndarray:
    """pixel_errors ``(n, R, P, P)`` -> region errors ``(n, R)``."""
    if rule == "mean":
        return pixel_errors.mean(axis=(2, 3))
    n, R, P, _ = pixel_errors.shape
    g = P // patch
    patches = pixel_errors.reshape(n, R, g, patch, g, patch).mean(axis=(3, 5))
    return patches.max(axis=(2, 3))


class CausalMean:
    """Moving average over the last ``n_frames`` rows, carried across chunks."""

    def __init__(self, n_frames: int):
        self.n = n_frames
        self.history: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.n <= 1 or len(x) == 0:
            return x
        hist = self.history if self.history is not None else x[:0]
        full = np.concatenate([hist, x]).astype(np.float64)
        csum = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(full, axis=0)])
        end = np.arange(len(hist) + 1, len(full) + 1)
        start = np.maximum(0, end - self.n)
        out = (csum[end] - csum[start]) / (end - start)[:, None]
        self.history = full[-(self.n - 1) :]
        return out.astype(x.dtype)


@dataclass(frozen=True)
class RegionStats:
    """A region's errors on normal frames, and the threshold derived from them."""

    mean: float
    std: float
    threshold: float
    percentiles: dict[str, float]
    pixel_scale: float  # 99th percentile of normal pixel errors: the anomaly map's unit
    n_frames: int

    def to_dict(self) -> dict:
        return asdict(self)


def normal_stats(errors: np.ndarray, pixel_errors: np.ndarray, threshold_sigma: float) -> RegionStats:
    """Statistics of one region's per-frame errors ``(n,)`` and pixel errors ``(n, P, P)`` on normal frames."""
    errors = errors.astype(np.float64)
    mean = float(errors.mean())
    # a region that never changes has zero spread; a floor keeps z finite
    std = max(float(errors.std()), 1e-3 * abs(mean), 1e-9)
    pixel_scale = max(float(np.percentile(pixel_errors, 99)), 1e-9)
    return RegionStats(
        mean=mean,
        std=std,
        threshold=mean + threshold_sigma * std,
        percentiles={str(p): float(np.percentile(errors, p)) for p in PERCENTILES},
        pixel_scale=pixel_scale,
        n_frames=int(len(errors)),
    )


def normalise(errors: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Region errors ``(n, R)`` -> z scores ``(n, R)``."""
    return (errors - mean[None, :]) / std[None, :]


def fuse(z: np.ndarray, cfg: ScoreConfig) -> tuple[np.ndarray, np.ndarray]:
    """z ``(n, R)`` -> frame score ``(n,)`` and anomalous flag ``(n,)``."""
    score = z.max(axis=1) if cfg.fusion == "max" else z.mean(axis=1)
    anomalous = (z > cfg.threshold_sigma).any(axis=1)
    return score, anomalous
