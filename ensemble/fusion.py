"""From per-pixel reconstruction errors to cell, region and frame scores.

Every region is divided into K cells of ``cell_size`` x ``cell_size`` patch pixels.
For every frame, region and cell:

1. cell error ``e``: the mean of the cell's pixel errors; cell motion energy ``E``:
   the mean of its input's squared deviation from "nothing moves" (the error a model
   would make that rebuilt every window as still);
2. what is compared with normal: ``r = e - offset - slope * (E - mean_E)``. With
   ``score.statistics = "region"`` (the default) ``r = e`` (plus ``motion_weight * E``, a blend
   with the ``speed`` floor, whose error is E): every cell of a region is
   measured on the region's one scale. With ``"cell"``, the cell's own normal mean is
   taken off and so is the error its amount of motion explains on normal video (a
   per-cell least-squares slope, at most ``explained_motion_max``): a crowd makes more
   error than a lone walker without being unusual;
3. a causal moving average over ``smoothing_frames`` frames, started from the normal
   level, so that a clip's first frames are no noisier than the rest;
4. z against normal frames: the region's largest smoothed cell value's mean and
   spread (``"region"``), or each cell's own (``"cell"``);
5. region score = its largest cell z, blended (``score.novelty_weight``) with the z of its
   codes' novelty (``ensemble.novelty``, :class:`ScoreChain`); frame score = the largest region
   score. The alarm threshold is set on held-out normal frames (``ensemble.ensemble``).

``"cell"`` scored best on every training-split tuning set and lost on UCSD Ped2's test
split, twice (docs/experiments.md): it makes a region as sensitive to where something
moves as to how, and normal video that moves where the training video rarely did suffers.
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
    """What normal looks like in each of a region's K cells (arrays ``(K,)``, see the module doc)."""

    offset: np.ndarray  # taken off every cell error: its normal mean ("cell"), or 0 ("region"); less motion_weight x mean_energy
    mean_energy: np.ndarray  # mean cell motion energy on normal frames
    slope: np.ndarray  # error per unit of motion energy that counts as normal (0 for "region")
    prior: np.ndarray  # where the smoothing starts: the normal mean of r
    mean: np.ndarray  # mean of the smoothed r on normal frames ("region": the region's, in every cell)
    std: np.ndarray  # its standard deviation: the z unit

    def residual(self, e: np.ndarray, E: np.ndarray) -> np.ndarray:
        """Cell errors and energies ``(..., K)`` -> r, what is compared with normal ``(..., K)``."""
        return e - self.offset - self.slope * (E - self.mean_energy)

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


@dataclass(frozen=True)
class NoveltyStats:
    """A region's second stream (``ensemble.novelty``): its bank of normal codes ``(M, D)`` and what its
    largest cell novelty, smoothed, looks like on normal frames (``stats``: arrays of one value)."""

    bank: np.ndarray
    stats: CellStats

    def to_dict(self) -> dict:
        import torch  # the checkpoint stores tensors; this module is otherwise numpy only

        return {"bank": torch.from_numpy(np.ascontiguousarray(self.bank, np.float32)), "stats": self.stats.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "NoveltyStats":
        return cls(d["bank"].numpy().astype(np.float32), CellStats.from_dict(d["stats"]))


def fuse_streams(z_reconstruction: np.ndarray, z_novelty: np.ndarray | None, novelty_weight: float) -> np.ndarray:
    """The reconstruction z, or, with a novelty stream, ``(1 - w) x z_rec + w x z_novelty``."""
    if z_novelty is None:
        return z_reconstruction
    return (1.0 - novelty_weight) * z_reconstruction + novelty_weight * z_novelty


class ScoreChain:
    """Cell maps of consecutive frames -> cell z, region scores and each stream's region z; smoothing carried across calls.

    Arrays ``(..., K)``: one region ``(n, K)`` with its own statistics, or all ``(n, R, K)`` with
    :meth:`CellStats.stack`-ed ones. The reconstruction stream: steps 2-5 of the module doc. The
    novelty stream (``novelty`` given): the region's largest cell novelty, smoothed, as z against
    normal frames. A region's score blends the two streams' region z with ``novelty_weight``;
    the cell z (what the anomaly maps show) blends the cells' own, each cell's novelty smoothed on its own.
    """

    def __init__(self, stats: CellStats, novelty: CellStats | None, smoothing: int, novelty_weight: float):
        self.stats, self.novelty, self.weight = stats, novelty, novelty_weight
        self.smooth = CausalMean(smoothing, prior=stats.prior)
        if novelty is not None:
            self.smooth_peak = CausalMean(smoothing, prior=novelty.prior)
            self.smooth_cells = CausalMean(smoothing, prior=novelty.prior)

    def __call__(self, error: np.ndarray, energy: np.ndarray, novelty: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cell errors, motion energies and novelties ``(..., K)`` -> cell z ``(..., K)``, region score ``(...)``,
        and the reconstruction and novelty region z ``(..., 2)`` (novelty NaN without that stream)."""
        z_rec = self.stats.z(self.smooth(self.stats.residual(error, energy)))
        rec = z_rec.max(axis=-1)
        if self.novelty is None:
            return z_rec, rec, np.stack([rec, np.full(rec.shape, np.nan)], axis=-1)
        nov = self.novelty.z(self.smooth_peak(novelty.max(axis=-1, keepdims=True)))[..., 0]
        cells = self.novelty.z(self.smooth_cells(novelty))
        return fuse_streams(z_rec, cells, self.weight), fuse_streams(rec, nov, self.weight), np.stack([rec, nov], axis=-1)


def fit_cell_stats(
    e: list[np.ndarray], E: list[np.ndarray], use: list[np.ndarray], statistics: str, explained_max: float, smoothing: int,
    motion_weight: float = 0.0,
) -> tuple[CellStats, list[np.ndarray]]:
    """One region's statistics from its normal clips' cell errors and energies (one ``(n, K)`` array per clip),
    ``use``: the frames (bool per clip) they are taken on. Returns them and every clip's smoothed r.
    ``motion_weight``: how much of the cell's motion energy E is added to its error."""
    e_use, E_use = np.concatenate([x[m] for x, m in zip(e, use)]), np.concatenate([x[m] for x, m in zip(E, use)])
    em, Em, slope = fit_slope(e_use, E_use, explained_max)
    K = len(em)
    if statistics == "region":
        offset, slope = np.zeros(K), np.zeros(K)
    else:
        offset = em
    # plus motion_weight x E itself, not its deviation from the cell's mean: on the region's one scale
    # like the `speed` floor, whose error E is
    slope, offset = slope - motion_weight, offset - motion_weight * Em
    partial = CellStats(offset, Em, slope, np.zeros(K), np.zeros(K), np.ones(K))
    prior = np.concatenate([partial.residual(a, b)[m] for a, b, m in zip(e, E, use)]).mean(axis=0)
    smoothed = [CausalMean(smoothing, prior)(partial.residual(a, b)) for a, b in zip(e, E)]
    normal = np.concatenate([r[m] for r, m in zip(smoothed, use)])
    if statistics == "region":
        mean, std = normal_spread(normal.max(axis=1, keepdims=True))
        mean, std = np.repeat(mean, K), np.repeat(std, K)
    else:
        mean, std = normal_spread(normal)
    return CellStats(offset, Em, slope, prior, mean, std), smoothed


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


def fuse_classifier(score: np.ndarray, p_anomalous: np.ndarray, threshold: float, weight: float) -> np.ndarray:
    """The frame score with a supervised classifier's vote (``score.classifier_weight``): ``score + weight x threshold x (2p - 1)``.

    In units of the alarm threshold: at weight 1 a frame the classifier is sure of
    (p = 1) is flagged whatever the ensemble says, one it rejects (p = 0) needs twice
    the threshold, and p = 0.5 changes nothing. The threshold stays the ensemble's, so
    the false-alarm rate it was set for no longer holds: measure it (``bench.supervised``).
    """
    return score + weight * threshold * (2.0 * np.asarray(p_anomalous, dtype=np.float64) - 1.0)
