"""The reconstruction stream: how badly a region's autoencoder rebuilds each cell, against its normal errors.

Every region is divided into K cells of ``cell_size`` x ``cell_size`` patch pixels.
For every frame, region and cell:

1. cell error ``e``: the mean of the cell's squared pixel errors; cell motion energy
   ``E``: the mean of its input's squared deviation from "nothing moves" (the error a
   model would make that rebuilt every window as still);
2. what is compared with normal: ``r = e - offset - slope * (E - mean_E)``. With
   ``score.statistics = "region"`` (the default) ``r = e`` (plus ``motion_weight * E``, a blend
   with the ``speed`` floor, whose error is E): every cell of a region is measured on
   the region's one scale. With ``"cell"``, the cell's own normal mean is taken off and
   so is the error its amount of motion explains on normal video (a per-cell
   least-squares slope, at most ``explained_motion_max``): a crowd makes more error than
   a lone walker without being unusual;
3. a causal moving average over ``smoothing_frames`` frames, started from the normal
   level, so that a clip's first frames are no noisier than the rest;
4. z against normal frames: the region's largest smoothed cell value's mean and spread
   (``"region"``), or each cell's own (``"cell"``). The region's z is its largest cell z.

``"cell"`` scored best on every training-split tuning set and lost on UCSD Ped2's test
split, twice (docs/experiments.md): it makes a region as sensitive to where something
moves as to how, and normal video that moves where the training video rarely did suffers.
"""

from __future__ import annotations

import numpy as np
import torch

from cuboid_ad.core.config import Config
from cuboid_ad.core.tubes import FLOW_ZERO
from cuboid_ad.ensemble.streams.base import CausalMean, CellStats, Chain, Fitted, Forward, Stream, fit_cell_stats

STILL = {"flow": FLOW_ZERO / 255.0, "diff": 0.5, "both": 0.5}  # the model input of "nothing moves" (ensemble.detector.encode_windows)


def motion_energy(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Model input ``(B, C', T, P, P)`` -> its motion energy ``(B, T, P, P)``: the squared distance of its
    motion channels from "nothing moves", channel mean; what a model that rebuilt every window as
    still would get wrong. ``frames`` input carries no motion: zeros."""
    if mode == "frames":
        return torch.zeros_like(x[:, 0])
    motion = x[:, x.shape[1] // 2 :] if mode == "both" else x  # "both" stacks frames, then differences
    return ((motion - STILL[mode]) ** 2).mean(dim=1)


class Reconstruction(Stream):
    name = "reconstruction"
    description = "how badly the region's autoencoder rebuilds each cell's motion, against its errors on normal frames"
    # reach: each pixel's largest motion energy over the window's frames, all that can reach a frame's error and
    # codes (what gates an absorbed stretch, ensemble.fusion.Absorbed); not part of r
    maps = ("error", "energy", "reach")

    def pixel_maps(self, fwd: Forward, reference: torch.Tensor | None, cfg: Config) -> torch.Tensor:
        error = ((fwd.y - fwd.x) ** 2).mean(dim=1).cpu()  # channel mean
        energy = motion_energy(fwd.x.cpu(), fwd.mode)
        return torch.stack([error, energy, energy.amax(dim=1, keepdim=True).expand_as(energy)], dim=2)

    def fit(self, cells: list[np.ndarray], use: list[np.ndarray], cfg: Config, reference: None) -> Fitted:
        s = cfg.score
        e, E = [c[:, 0] for c in cells], [c[:, 1] for c in cells]
        stats, _ = fit_cell_stats(e, E, use, s.statistics, s.explained_motion_max, s.smoothing_frames, s.motion_weight, s.persistence_frames)
        return Fitted(stats)

    def chain(self, stats: CellStats, cfg: Config) -> Chain:
        smooth = CausalMean(cfg.score.smoothing_frames, prior=stats.prior, persist=cfg.score.persistence_frames)

        def step(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            z = stats.z(smooth(stats.residual(cells[..., 0, :], cells[..., 1, :])))
            return z, z.max(axis=-1)

        return step

