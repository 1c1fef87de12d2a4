"""From per-pixel reconstruction errors to cell, region and frame scores.

For every frame and region (``cell_size`` patch pixels per cell side, K cells):

1. cell error ``e``: the mean of the cell's pixel errors; cell motion energy ``E``:
   the mean of its input's squared deviation from "nothing moves" (the error a
   model would make that rebuilt every window as still);
2. residual ``r = e - (mean_e + slope * (E - mean_E))``: the error that the amount
   of motion does not explain. ``slope`` is the cell's least-squares fit of ``e`` on
   ``E`` over normal frames, kept in ``[0, explained_motion_max]``: a crowd makes
   more error than a lone walker without being unusual (a cap below 1 keeps motion
   where the model never learned to rebuild any, slope 1, from being explained away);
3. a causal moving average over ``smoothing_frames`` frames, started from the
   normal level (0), so that a clip's first frames are no noisier than the rest;
4. cell z = (smoothed r - mean) / std against the cell's normal frames;
5. region score = its largest cell z; frame score = the largest region score.
   The alarm threshold is set on held-out normal frames (``ensemble.ensemble``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def region_errors(pixel_errors: np.ndarray, rule: str, patch: int) -> np.ndarray:
    """pixel_errors ``(n, R, P, P)`` -> region errors ``(n, R)``: the ``"mean"``, or the largest mean over
    ``patch`` x ``patch`` patches (``"patch_max"``). The no-learning floors of ``bench.motion`` use it."""
    if rule == "mean":
        return pixel_errors.mean(axis=(2, 3))
    return cell_means(pixel_errors, patch).max(axis=2)


def cell_means(maps: np.ndarray, cell: int) -> np.ndarray:
    """Per-pixel maps ``(..., P, P)`` -> their means over ``cell`` x ``cell`` cells ``(..., K)``, K = (P / cell)^2, row by row."""
    *lead, P, _ = maps.shape
    g = P // cell
    return maps.reshape(*lead, g, cell, g, cell).mean(axis=(-3, -1)).reshape(*lead, g * g)


class CausalMean:
    """Moving average over the last ``n_frames`` rows, carried across chunks.

    Before the first row, the history holds ``n_frames - 1`` rows of ``prior``
    (default: none, so the first rows average fewer frames).
    """

    def __init__(self, n_frames: int, prior: np.ndarray | float | None = None):
        self.n = n_frames
        self.prior = prior
        self.history: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.n <= 1 or len(x) == 0:
            return x
        if self.history is None:
            self.history = x[:0] if self.prior is None else np.broadcast_to(np.asarray(self.prior, np.float64), (self.n - 1, *x.shape[1:]))
        hist = self.history
        full = np.concatenate([hist, x]).astype(np.float64)
        csum = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(full, axis=0)])
        end = np.arange(len(hist) + 1, len(full) + 1)
        start = np.maximum(0, end - self.n)
        out = (csum[end] - csum[start]) / (end - start).reshape(-1, *[1] * (x.ndim - 1))
        self.history = full[-(self.n - 1) :]
        return out.astype(x.dtype)


@dataclass(frozen=True)
class CellStats:
    """What normal looks like in each of a region's K cells (arrays ``(K,)``)."""

    mean_error: np.ndarray  # mean cell error on normal frames
    mean_energy: np.ndarray  # mean cell motion energy on normal frames
    slope: np.ndarray  # error per unit of motion energy that counts as normal
    mean: np.ndarray  # mean of the smoothed residual (about 0)
    std: np.ndarray  # its standard deviation: the z unit

    def residual(self, e: np.ndarray, E: np.ndarray) -> np.ndarray:
        """Cell errors and energies ``(..., K)`` -> the error the motion does not explain ``(..., K)``."""
        return e - (self.mean_error + self.slope * (E - self.mean_energy))

    def z(self, smoothed_residual: np.ndarray) -> np.ndarray:
        return (smoothed_residual - self.mean) / self.std

    def to_dict(self) -> dict[str, list[float]]:
        return {k: np.asarray(v, np.float64).tolist() for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "CellStats":
        return cls(**{k: np.asarray(d[k], np.float64) for k in cls.__dataclass_fields__})

    @classmethod
    def stack(cls, stats: list["CellStats"]) -> "CellStats":
        """Several regions' statistics as arrays ``(R, K)``, to score all regions at once."""
        return cls(**{k: np.stack([getattr(s, k) for s in stats]) for k in cls.__dataclass_fields__})


def fit_slope(e: np.ndarray, E: np.ndarray, explained_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell, the least-squares slope of error ``e`` on motion energy ``E`` ``(n, K)``, clipped to
    ``[0, explained_max]``; returns (mean error, mean energy, slope), each ``(K,)``."""
    e, E = e.astype(np.float64), E.astype(np.float64)
    em, Em = e.mean(axis=0), E.mean(axis=0)
    var = ((E - Em) ** 2).mean(axis=0)
    cov = ((E - Em) * (e - em)).mean(axis=0)
    slope = np.where(var > 0, cov / np.where(var > 0, var, 1.0), 0.0)
    return em, Em, np.clip(slope, 0.0, explained_max)


def normal_spread(smoothed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation ``(K,)`` of smoothed residuals ``(n, K)``; a cell that never varies gets a floor."""
    mean = smoothed.mean(axis=0)
    std = smoothed.std(axis=0)
    # a cell whose residual never varies (a wall, a black border) would give infinite z
    floor = max(float(np.median(std)) * 1e-3, 1e-12)
    return mean, np.maximum(std, floor)


def alarm_threshold(normal_scores: np.ndarray, false_alarm_rate: float) -> float:
    """The score above which at most a share ``false_alarm_rate`` of ``normal_scores`` lies: one of
    them (the highest, when there are fewer than 1 / rate)."""
    return float(np.quantile(np.asarray(normal_scores, np.float64), 1.0 - false_alarm_rate, method="higher"))
