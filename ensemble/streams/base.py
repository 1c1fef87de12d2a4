"""What every per-region stream is, and the statistics that turn its values into z.

A *stream* is one way of measuring how unusual each part of a region is (its
reconstruction error, the novelty of its codes, ...). Each is one module of this
package implementing :class:`Stream`, registered in ``ensemble.streams``:

1. from every batch of windows through the region's autoencoder (:class:`Forward`)
   it computes per-pixel maps (``maps``), which the sliding windows average over
   the frames and the detector averages over cells of ``score.cell_size`` pixels;
2. ``fit`` learns from the normal video's cell maps what normal looks like
   (:class:`Fitted`: a :class:`CellStats`, and for some a ``reference`` that new
   video is measured against, such as a bank of normal codes);
3. ``chain`` turns cell maps of consecutive frames into each cell's z and the
   region's z, smoothing causally across calls;
4. the detector weighs the streams' z into one score (``score.streams``).

A stream that measures against a reference built from the normal video itself
(``leaves_segment_out``) measures each stretch of the normal video against the
reference built without that stretch, as new video will be.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from cuboid_ad.core.config import Config


@dataclass(frozen=True)
class Forward:
    """One batch of windows through a region's autoencoder, for the streams to read."""

    x: torch.Tensor  # the model's input (B, C', T, P, P) in [0, 1]
    features: torch.Tensor  # the encoder's last layer before its bottleneck (B, F, T, P', P')
    code: torch.Tensor  # the code the decoder rebuilds from (B, D, T, P', P')
    y: torch.Tensor  # the reconstruction (B, C', T, P, P)
    mode: str  # model.input: what x holds


# uint8 windows (B, T', C, P, P) -> (features, code), the encoder only: for streams that build a reference
Encode = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]
# cell maps of consecutive frames (..., n_maps, K) -> each cell's z (..., K) and the region's z (...)
Chain = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class CausalMean:
    """Moving average over the last ``n_frames`` rows, carried across chunks.

    Before the first row, the history holds ``n_frames - 1`` rows of ``prior``
    (default: none, so the first rows average fewer frames). With ``persist`` > 1
    each row is first replaced by the smallest of it and the ``persist - 1`` rows
    before it (the prior before the first): a value counts only as long as it
    lasted, so one frame's glitch (a codec refreshing still texture at once) does
    not, while anything that moves for several frames does, ``persist - 1``
    frames later.
    """

    def __init__(self, n_frames: int, prior: np.ndarray | float | None = None, persist: int = 1):
        self.n = n_frames
        self.prior = prior
        self.persist = persist
        self.history: np.ndarray | None = None
        self.recent: np.ndarray | None = None  # the last persist - 1 rows as they came

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.persist > 1 and len(x):
            x = self._lasting(x)
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

    def _lasting(self, x: np.ndarray) -> np.ndarray:
        """Each row -> the smallest of it and the ``persist - 1`` rows before it."""
        k = self.persist - 1
        if self.recent is None:
            # without a prior the first rows look back as far as there is: copies of the first row change no minimum
            first = x[:1] if self.prior is None else np.asarray(self.prior, x.dtype)
            self.recent = np.broadcast_to(first, (k, *x.shape[1:]))
        full = np.concatenate([self.recent, x])
        out = x.copy()
        for lag in range(1, k + 1):
            out = np.minimum(out, full[k - lag : k - lag + len(x)])
        self.recent = full[-k:]
        return out


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
class Fitted:
    """What a stream learned of one region's normal video: its statistics, and what new video is measured against."""

    stats: CellStats
    reference: np.ndarray | None = None  # e.g. the bank of normal codes (M, D)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stats": self.stats.to_dict()}
        if self.reference is not None:  # the checkpoint stores tensors
            out["reference"] = torch.from_numpy(np.ascontiguousarray(self.reference, np.float32))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Fitted":
        ref = d.get("reference")
        return cls(CellStats.from_dict(d["stats"]), None if ref is None else ref.numpy().astype(np.float32))


class Stream:
    """The protocol of a per-region stream (see the module doc). Subclasses set the class attributes and
    implement :meth:`pixel_maps`, :meth:`fit` and :meth:`chain`; those with a reference, :meth:`reference`
    and :meth:`without_segment` too."""

    name: ClassVar[str]  # in score.streams, maps.h5, scores.csv and the report
    description: ClassVar[str]  # one line for the report and the web app: what it measures
    maps: ClassVar[tuple[str, ...]]  # the per-pixel maps it reads from every window, in order
    leaves_segment_out: ClassVar[bool] = False

    def reference(self, encode: Encode, tubes: list[np.ndarray], segments: list[np.ndarray], cfg: Config) -> Any:
        """What new video is measured against, built from the normal tubes ``(n, C, P, P)`` (None: nothing)."""
        return None

    def without_segment(self, reference: Any, segment: int) -> torch.Tensor | None:
        """The reference to measure one segment of the normal video against (without that segment's part)."""
        return None

    def scoring_reference(self, fitted: Fitted) -> torch.Tensor | None:
        """The fitted reference as :meth:`pixel_maps` takes it when scoring new video."""
        return None if fitted.reference is None else torch.from_numpy(fitted.reference)

    def pixel_maps(self, fwd: Forward, reference: torch.Tensor | None, cfg: Config) -> torch.Tensor:
        """A batch of windows -> this stream's maps ``(B, T, len(maps), P, P)`` on the CPU."""
        raise NotImplementedError

    def fit(self, cells: list[np.ndarray], use: list[np.ndarray], cfg: Config, reference: Any) -> Fitted:
        """Normal statistics from the normal video's cell maps (one ``(n, len(maps), K)`` array per stretch) on the
        frames ``use`` marks; ``reference`` as :meth:`reference` built it."""
        raise NotImplementedError

    def chain(self, stats: CellStats, cfg: Config) -> Chain:
        """A scoring chain over consecutive frames (stats of one region ``(K,)`` or of all, stacked ``(R, K)``)."""
        raise NotImplementedError


def fit_cell_stats(
    e: list[np.ndarray], E: list[np.ndarray], use: list[np.ndarray], statistics: str, explained_max: float, smoothing: int,
    motion_weight: float = 0.0, persist: int = 1,
) -> tuple[CellStats, list[np.ndarray]]:
    """One region's statistics from its normal clips' cell errors and energies (one ``(n, K)`` array per clip),
    ``use``: the frames (bool per clip) they are taken on. Returns them and every clip's smoothed r.
    ``motion_weight``: how much of the cell's motion energy E is added to its error; ``persist``: as
    :class:`CausalMean`'s."""
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
    smoothed = [CausalMean(smoothing, prior, persist)(partial.residual(a, b)) for a, b in zip(e, E)]
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
