"""The novelty stream: how unusual a region's codes are, whatever the autoencoder makes of them.

The autoencoder's encoder turns a window of T frames into a code ``(D, T, P', P')``: at
every frame and location, a D-vector that describes the motion around that spot (its
receptive field spans a few cells and frames). On a region's normal video these codes are
collected and a subset of ``score.code_bank`` of them is kept by greedy k-centre selection
(Gonzalez 1985; PatchCore, Roth et al. 2022, shrinks its memory bank the same way): every
normal code then lies close to a kept one, rare normal motion included. A new code's
*novelty* is its Euclidean distance to the nearest kept code.

Why a second stream: a convolutional autoencoder learns to rebuild motion in general, so
a cyclist in a walkway is often rebuilt well enough to hide much of its speed, while its
code lies far from every code of walking people. The bank pools all locations of a region,
so a walker where the training video had none still finds walkers' codes nearby.

Normal frames are measured against the bank without their own *segment* (their clip, or
a stretch of at most :data:`SEGMENT_FRAMES` frames of a longer one), as new video is:
a code's own copy in the bank would make every normal frame look perfectly familiar.

What it measures at each location is the autoencoder's ``code`` (its bottleneck, what the
decoder rebuilds from) or the wider ``features`` of the encoder's last layer before it
(``score.novelty_features``). The region's z is that of its largest cell novelty, smoothed;
a cell's z, for the anomaly maps, that of its own novelty, smoothed on the same scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from cuboid_ad.core.config import Config
from cuboid_ad.core.windows import gather_windows
from cuboid_ad.ensemble.streams.base import CausalMean, CellStats, Chain, Encode, Fitted, Forward, Stream, fit_cell_stats

SEGMENT_FRAMES = 300  # a longer clip counts as several segments when normal frames are measured
SAMPLE_CODES = 50_000  # codes drawn at random from the normal video before the k-centre selection
_QUERY_ROWS = 1024  # codes measured per distance matrix: (1024 x bank) floats stay in the CPU cache


def segment_ids(clip_frames: list[int]) -> list[np.ndarray]:
    """Per clip, every frame's segment number (unique over clips): clips cut into stretches of at most
    :data:`SEGMENT_FRAMES` frames of equal length."""
    out, next_id = [], 0
    for n in clip_frames:
        k = max(1, -(-n // SEGMENT_FRAMES))
        out.append(next_id + (np.arange(n) * k // max(n, 1)))
        next_id += k
    return out


def frame_codes(encode: Callable[[np.ndarray], torch.Tensor], tube: np.ndarray, clip_length: int, with_previous: bool) -> np.ndarray:
    """One clip's tube ``(n, C, P, P)`` -> every frame's codes ``(n, L, D)``, L = P' x P' locations, from
    windows that tile the clip (the last one aligned to its end). ``encode``: uint8 windows -> codes
    ``(B, D, T, P', P')``."""
    n, T = len(tube), clip_length
    starts = list(range(0, max(n - T, 0) + 1, T))
    if starts[-1] < n - T:
        starts.append(n - T)
    out = None
    for i in range(0, len(starts), 64):
        batch = np.asarray(starts[i : i + 64])
        z = encode(gather_windows(tube, batch, T, with_previous)).float().cpu()  # (B, D, T, h, w)
        B, D = z.shape[:2]
        z = z.permute(0, 2, 3, 4, 1).reshape(B, T, -1, D).numpy()
        if out is None:
            out = np.zeros((n, z.shape[2], D), np.float32)
        for b, s in enumerate(batch):
            out[s : s + T] = z[b][: n - s]
    return out


def k_centres(x: np.ndarray, m: int) -> np.ndarray:
    """Indices of at most ``m`` rows of ``x`` ``(N, D)`` chosen greedily, each the farthest from those before
    (the first: the row farthest from the mean); stops early once every row is one of them."""
    xs = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    first = int(((xs - xs.mean(dim=0)) ** 2).sum(dim=1).argmax())
    chosen = [first]
    dist = ((xs - xs[first]) ** 2).sum(dim=1)  # squared distance to the nearest chosen row
    while len(chosen) < min(m, len(xs)):
        i = int(dist.argmax())
        if float(dist[i]) == 0.0:
            break
        chosen.append(i)
        dist = torch.minimum(dist, ((xs - xs[i]) ** 2).sum(dim=1))
    return np.asarray(chosen, np.int64)


def build_bank(codes: list[np.ndarray], segments: list[np.ndarray], size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The kept normal codes ``(M, D)`` and each one's segment ``(M,)``, from every clip's frame codes
    ``(n, L, D)`` and its frames' segments ``(n,)``. At most :data:`SAMPLE_CODES` codes, drawn at random,
    enter the selection; ``seed`` fixes the draw."""
    rng = np.random.default_rng(seed)
    total = sum(c.shape[0] * c.shape[1] for c in codes)
    keep = min(1.0, SAMPLE_CODES / max(total, 1))
    picked, seg = [], []
    for c, s in zip(codes, segments):
        n, L, D = c.shape
        flat, fseg = c.reshape(-1, D), np.repeat(s, L)
        mask = rng.random(len(flat)) < keep
        picked.append(flat[mask])
        seg.append(fseg[mask])
    x, s = np.concatenate(picked), np.concatenate(seg)
    idx = k_centres(x, size)
    return x[idx], s[idx]


def nearest_distance(codes: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Codes ``(..., D)`` -> each one's Euclidean distance to the nearest row of ``bank`` ``(M, D)``, shape ``(...)``.

    One matrix product gives every squared distance, as |q|^2 - 2 q.b + |b|^2, in double
    precision: in single precision its rounding (which depends on how many codes go in at
    once) is as large as the smallest distances, and would make scores depend on the batch."""
    flat, bank = codes.reshape(-1, codes.shape[-1]).double(), bank.double()
    norms = (bank * bank).sum(dim=1)
    out = []
    for i in range(0, len(flat), _QUERY_ROWS):
        q = flat[i : i + _QUERY_ROWS]
        nearest = torch.addmm(norms, q, bank.T, alpha=-2.0).amin(dim=1)
        out.append((nearest + (q * q).sum(dim=1)).clamp_min_(0.0).sqrt_())
    return torch.cat(out).float().reshape(codes.shape[:-1]) if out else codes.new_zeros(codes.shape[:-1]).float()


def spread_floor(bank: np.ndarray) -> float:
    """The smallest standard deviation of novelty that z may divide by: 1e-4 of the largest normal code's
    length. Only a region whose normal codes never vary (a blank wall) comes near it: there any change is
    unusual, but a z must not grow from the rounding of float32 convolutions (about 1e-7 of a code)."""
    return max(1e-4 * float(np.sqrt((bank.astype(np.float64) ** 2).sum(axis=1)).max(initial=0.0)), 1e-12)


def novelty_map(code: torch.Tensor, bank: torch.Tensor, patch: int) -> torch.Tensor:
    """A window's code ``(B, D, T, h, w)`` -> every pixel's novelty ``(B, T, P, P)``: its location's distance
    to the bank, spread over the patch pixels that location stands for."""
    d = nearest_distance(code.permute(0, 2, 3, 4, 1), bank)  # (B, T, h, w)
    return d.repeat_interleave(patch // d.shape[-2], dim=-2).repeat_interleave(patch // d.shape[-1], dim=-1)


def measured(features: torch.Tensor, code: torch.Tensor, cfg: Config) -> torch.Tensor:
    """What novelty is measured on (``score.novelty_features``): the encoder's code or its wider features."""
    return features if cfg.score.novelty_features == "features" else code


class Novelty(Stream):
    name = "novelty"
    description = "how far the autoencoder's codes of the region's cells lie from every code of its normal video"
    maps = ("novelty",)
    leaves_segment_out = True

    def reference(self, encode: Encode, tubes: list[np.ndarray], segments: list[np.ndarray], cfg: Config) -> tuple[np.ndarray, np.ndarray]:
        """The bank of normal codes ``(M, D)`` and each one's segment ``(M,)``."""
        T = cfg.cuboids.clip_length_in_frames
        codes = [frame_codes(lambda w: measured(*encode(w), cfg), tube, T, cfg.needs_previous) for tube in tubes]
        return build_bank(codes, segments, cfg.score.code_bank, cfg.train.seed)

    def without_segment(self, reference: tuple[np.ndarray, np.ndarray], segment: int) -> torch.Tensor:
        bank, bank_segment = reference
        rest = bank[bank_segment != segment]
        return torch.from_numpy(rest if len(rest) else bank)

    def pixel_maps(self, fwd: Forward, reference: torch.Tensor | None, cfg: Config) -> torch.Tensor:
        code = measured(fwd.features, fwd.code, cfg)
        return novelty_map(code, reference.to(code.device), fwd.x.shape[-1]).cpu()[:, :, None]

    def fit(self, cells: list[np.ndarray], use: list[np.ndarray], cfg: Config, reference: tuple[np.ndarray, np.ndarray]) -> Fitted:
        bank = reference[0]
        peak = [c[:, 0].max(axis=1, keepdims=True) for c in cells]  # the region's largest cell novelty, one value a frame
        stats, _ = fit_cell_stats(peak, [np.zeros_like(x) for x in peak], use, "region", 0.0, cfg.score.smoothing_frames, 0.0, cfg.score.persistence_frames)
        return Fitted(replace(stats, std=np.maximum(stats.std, spread_floor(bank))), bank)

    def chain(self, stats: CellStats, cfg: Config) -> Chain:
        smoothing, persist = cfg.score.smoothing_frames, cfg.score.persistence_frames
        smooth_peak, smooth_cells = CausalMean(smoothing, stats.prior, persist), CausalMean(smoothing, stats.prior, persist)

        def step(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            novelty = cells[..., 0, :]
            region = stats.z(smooth_peak(novelty.max(axis=-1, keepdims=True)))[..., 0]
            return stats.z(smooth_cells(novelty)), region

        return step

