"""From per-cell stream values to region and frame scores, and the alarm threshold.

Each stream of ``ensemble.streams`` turns a region's cell maps into each cell's z
and the region's z. A region's score is the streams' z weighed by
``score.streams`` (the anomaly maps show the cells' z weighed alike); a frame's
score is its largest region score. The alarm threshold is set on held-out normal
frames (``ensemble.ensemble``); a supervised classifier's vote may join the frame
score (``score.classifier_weight``). Stretches an operator marked as normal
(:class:`Absorbed`) divide the z of the cells that carried them while these move as much as they did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cuboid_ad.core.config import Config
from cuboid_ad.ensemble.streams.base import CausalMean, CellStats, Stream


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


def map_layout(streams: list[Stream]) -> dict[str, slice]:
    """Where each stream's maps sit among a window's maps: after the shown reconstruction (index 0), in stream order."""
    layout, at = {}, 1
    for s in streams:
        layout[s.name] = slice(at, at + len(s.maps))
        at += len(s.maps)
    return layout


@dataclass(frozen=True)
class Absorbed:
    """What a region learnt from stretches an operator marked as normal (``RegionDetector.absorbed``), as scoring
    applies it: while the gate energy of the absorbed ``cells`` (None: all) is at least ``bar``, their z (every
    stream's) are divided by ``factor``, and each stream's region z, where above normal, falls in the proportion its
    top cell's z fell (a region z that is a smoothed peak lies above its cells'); the other cells, and all of them
    while the gate is shut, score as before. The gate energy is the largest motion energy of the absorbed cells over
    every input frame that reaches their z: the reconstruction stream's ``reach`` map (each pixel's largest motion
    energy over a window's frames, averaged over the windows that cover a frame, as every map is: a frame's error
    and codes come from those windows), over that frame and the ones whose values reach its smoothed z
    (``score.smoothing_frames + score.persistence_frames - 1``). A person crossing a lawn that headlights sweep
    scores in full whenever no lights sweep it (they move much faster than people); a cyclist crossing a region
    where a flag flaps in one corner, everywhere but in the flag's cells."""

    bar: float = 0.0
    factor: float = 1.0  # 1: nothing absorbed
    cells: tuple[int, ...] | None = None


class ScoreChain:
    """Cell maps of consecutive frames -> cell z, region scores and each stream's region z; smoothing carried across calls.

    Cell maps ``(..., n_maps, K)``, laid out as :func:`map_layout` says: one region ``(n, n_maps, K)`` with its
    own statistics and :class:`Absorbed`, or all ``(n, R, n_maps, K)`` with :meth:`CellStats.stack`-ed ones and a
    list of R. ``energy``: the last call's largest motion energy of every cell over the frames that reach its z
    ``(..., K)``, what gates :class:`Absorbed` cells (None without a stream with a ``reach`` map).
    """

    def __init__(self, streams: list[tuple[Stream, float]], stats: list[CellStats], cfg: Config, absorbed: Absorbed | list[Absorbed] | None = None):
        self.names = [s.name for s, _ in streams]
        self.weights = [w for _, w in streams]
        self.layout = map_layout([s for s, _ in streams])
        self.chains = [s.chain(st, cfg) for (s, _), st in zip(streams, stats)]
        absorbed = absorbed if isinstance(absorbed, list) else [absorbed or Absorbed()]  # one region: broadcast over its frames
        self.bar, self.factor = np.array([[a.bar] for a in absorbed]), np.array([[a.factor] for a in absorbed])  # (R, 1)
        self.absorbed = absorbed
        self.mask: np.ndarray | None = None  # (R, K): the absorbed cells
        where = [self.layout[s.name].start + s.maps.index("reach") for s, _ in streams if "reach" in s.maps]
        self.energy_map = where[0] if where else None
        # the largest over those frames, as the smallest of the negated: the smoothing's own "lasted that long" window
        self.recent = None if self.energy_map is None else CausalMean(1, persist=cfg.score.smoothing_frames + cfg.score.persistence_frames - 1)
        self.energy: np.ndarray | None = None
        self.stream_cells: list[np.ndarray] = []

    def __call__(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> cell z ``(..., K)`` and region score ``(...)``, the streams' z weighed; each stream's region z ``(..., S)``.
        ``energy`` and ``stream_cells`` (each stream's cell z) keep this call's gate energies and cells."""
        outs = [chain(cells[..., self.layout[name], :]) for name, chain in zip(self.names, self.chains)]
        if self.recent is not None:
            self.energy = -self.recent(-cells[..., self.energy_map, :])
        if np.any(self.factor != 1.0):
            outs = self._absorbed(outs, cells.shape[-1])
        self.stream_cells = [c for c, _ in outs]
        cell_z = region = None
        for w, (c, r) in zip(self.weights, outs):
            if w > 0:  # a stream of weight 0 is shown, never summed (its z may be infinite)
                cell_z = w * c if cell_z is None else cell_z + w * c
                region = w * r if region is None else region + w * r
        return cell_z, region, np.stack([r for _, r in outs], axis=-1)

    def _absorbed(self, outs: list[tuple[np.ndarray, np.ndarray]], K: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each stream's (cell z, region z) with the absorbed cells divided where their gate is open (:class:`Absorbed`)."""
        if self.mask is None:
            self.mask = np.array([[a.cells is None or k in a.cells for k in range(K)] for a in self.absorbed])
        gate = self.mask
        if self.energy is not None:
            gate = gate & (np.where(self.mask, self.energy, -np.inf).max(axis=-1, keepdims=True) >= self.bar)
        div = np.where(gate, self.factor, 1.0)
        out = []
        for c, r in outs:
            divided = c / div
            top = c.max(axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):  # an infinite z stays infinite
                kept = np.nan_to_num(np.where(top > 0, divided.max(axis=-1) / top, 1.0), nan=1.0)
            out.append((divided, np.where(r > 0, r * kept, r)))
        return out


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
