"""One region's detector: its autoencoder plus what normal looks like there, stream by stream.

PyOD's pattern: ``__init__`` stores settings; ``fit(tubes)`` trains on normal clips
and sets the learned attributes (``model_``, ``fitted_``: what each stream of
``score.streams`` learned, ``held_out_scores_``, ``threshold_``, ``history_``) and
returns the detector; ``decision_function(tube)`` gives one score per frame, higher =
more anomalous (the streams' region z weighed, see ``ensemble.fusion``);
``predict(tube)`` is 1 for the frames whose score exceeds ``threshold_``, the score
that ``score.false_alarm_rate`` of the held-out normal frames exceed (the region on
its own; the ensemble sets one threshold for all regions together), else 0. Both
raise until the detector is fitted. :meth:`recalibrated` returns a new detector with
the same weights and its statistics computed under other ``[score]`` settings.

Checkpoint (``models/<region_id>.pt``, read with ``torch.load(weights_only=True)``):
a dict of plain values and tensors: format, format_version, config (JSON), region,
frame_size, state_dict, streams (each stream's statistics and reference, by name),
held_out_scores, history, training_clips.
"""

from __future__ import annotations

import pickle
import threading
import zipfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cuboid_ad.core.arrays import runs
from cuboid_ad.core.artifacts import KINDS, atomic_path, require_config, stamp_dict
from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import ArtifactError, InputError
from cuboid_ad.core.grid import Region
from cuboid_ad.core.tubes import FLOW_GAIN, RegionTube, code_to_flow
from cuboid_ad.core.windows import window_index
from cuboid_ad.ensemble.fit import TrainState, fit_autoencoder, split_windows, validation_masks
from cuboid_ad.ensemble.fusion import Absorbed, ScoreChain, alarm_threshold, cell_means, map_layout
from cuboid_ad.ensemble.model import build_autoencoder
from cuboid_ad.ensemble.sliding import score_tubes
from cuboid_ad.ensemble.streams import resolve
from cuboid_ad.ensemble.streams.base import Fitted, Forward
from cuboid_ad.ensemble.streams.novelty import segment_ids

_INIT_LOCK = threading.Lock()
REPLAY = 4  # training windows replayed for each marked window when a detector absorbs feedback
SETTLE = 0.8  # marked frames must score below this share of the alarm threshold once absorbed
ABSORB_ENERGY = 0.25  # ... in the cells that carried them, while these move with this share of their slowest such frame's motion energy (half its speed) or more
ROUNDS = 16  # rounds of raising the factor, beyond those that absorb a cell, before a stretch absorbs its whole region
CELLS_MAX = 8  # a stretch that needs more of a region's cells than this (an eighth of the default's 64) is absorbed by the whole region


def encode_windows(windows: np.ndarray, mode: str) -> torch.Tensor:
    """uint8 windows ``(B, T', C, P, P)`` -> model input ``(B, C', T, P, P)`` in [0, 1].

    ``frames``: pixels / 255 (T' = T). ``diff``: 0.5 + (frame - previous frame) / 2
    (T' = T + 1). ``both``: the two stacked as channels. ``flow``: the stored flow
    codes / 255, so 128 / 255 is no motion (T' = T).
    """
    x = torch.from_numpy(windows).to(torch.float32).div_(255.0).permute(0, 2, 1, 3, 4)
    if mode in ("frames", "flow"):
        out = x
    else:
        out = (x[:, :, 1:] - x[:, :, :-1]).mul_(0.5).add_(0.5)
        if mode == "both":
            out = torch.cat([x[:, :, 1:], out], dim=1)
    # channels-last 3D convolutions run about twice as fast on CPU (oneDNN)
    return out.contiguous(memory_format=torch.channels_last_3d)


def shown_reconstruction(y: torch.Tensor, windows: np.ndarray, mode: str) -> torch.Tensor:
    """The model's output ``y`` ``(B, C', T, P, P)`` as a picture ``(B, T, P, P)`` in [0, 1].

    A ``frames`` model rebuilds pixels (channel mean). A ``diff`` model rebuilds
    frame differences; its frame is the previous (real) frame plus the rebuilt
    difference, so whatever motion it cannot reproduce is missing or smeared.
    A ``both`` model's frame channels are shown. A ``flow`` model rebuilds
    motion, shown as its speed: 0 black, 1 patch pixel per frame or more white.
    """
    y = y.float().cpu()
    C = windows.shape[2]
    if mode == "flow":
        flow = code_to_flow(y * 255.0)  # patch pixels per frame
        return flow.pow(2).sum(dim=1).sqrt().clamp_(0.0, 1.0)
    if mode == "frames":
        rec = y
    elif mode == "both":
        rec = y[:, :C]
    else:
        previous = torch.from_numpy(windows[:, :-1]).float().div_(255.0).permute(0, 2, 1, 3, 4)
        rec = previous + (y - 0.5) * 2.0
    return rec.clamp_(0.0, 1.0).mean(dim=1)


class RegionDetector:
    def __init__(self, cfg: Config, region: Region, frame_size: tuple[int, int]):
        self.cfg = cfg
        self.region = region
        self.frame_size = frame_size
        self.streams = resolve(cfg.score)  # [(stream, weight)] in the registry's order
        # a window's maps: the reconstruction as shown (index 0), then each stream's
        self.layout = map_layout([s for s, _ in self.streams])
        self.n_maps = 1 + sum(len(s.maps) for s, _ in self.streams)

    @property
    def needs_previous(self) -> bool:
        return self.cfg.needs_previous

    @property
    def stream_names(self) -> list[str]:
        return [s.name for s, _ in self.streams]

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        model = build_autoencoder(m.architecture, self.cfg.in_channels, m.filters, m.bottleneck_channels)
        # 3D convolutions run fastest on channels-last tensors; the 2D ones of a convlstm take frames as they come
        return model.to(memory_format=torch.channels_last_3d) if m.architecture == "conv3d" else model

    # -- fitting ---------------------------------------------------------------------------

    def _split(self, tubes: list[RegionTube]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All frames stacked, and the index rows of training and validation windows."""
        T = self.cfg.cuboids.clip_length_in_frames
        t = self.cfg.train
        frames = np.concatenate([x.tube for x in tubes])
        masks = validation_masks([len(x.tube) for x in tubes], t.val_block_frames, t.val_fraction)
        train_rows, val_rows = [], []
        offset = 0
        for x, mask in zip(tubes, masks):
            n = len(x.tube)
            tr, va = split_windows(mask, x.window_starts, T, self.needs_previous)
            for starts, rows in ((tr, train_rows), (va, val_rows)):
                rows.append(window_index(starts + offset, T, self.needs_previous, offset, offset + n - 1))
            offset += n
        train_index, val_index = np.concatenate(train_rows), np.concatenate(val_rows)
        if len(train_index) == 0 or len(val_index) == 0:
            raise InputError(
                f"region {self.region.region_id}: too little normal video to train and validate "
                f"({len(frames)} frames give {len(train_index)} training and {len(val_index)} validation windows); "
                "add normal clips or lower train.val_block_frames"
            )
        return frames, train_index, val_index

    def fit(
        self, tubes: list[RegionTube], device: str = "cpu", resume: dict | None = None, on_epoch=None, should_stop=None
    ) -> "RegionDetector":
        """Train on normal tubes, then calibrate the statistics on them (see :meth:`_calibrate`).

        ``resume``, ``on_epoch``, ``should_stop``: see :func:`ensemble.fit.fit_autoencoder`.
        """
        frames, train_index, val_index = self._split(tubes)
        with _INIT_LOCK:  # regions train in threads: seeding and drawing the weights must not interleave
            torch.manual_seed(self.cfg.train.seed)
            model = self.build_model()
        mode = self.cfg.model.input
        best, state = fit_autoencoder(
            model,
            frames,
            train_index,
            val_index,
            lambda w: encode_windows(w, mode),
            self.cfg.train,
            torch.device(device),
            resume=resume,
            on_epoch=on_epoch,
            should_stop=should_stop,
        )
        model.load_state_dict(best)
        self.model_ = model.eval()
        self.device_ = torch.device(device)
        self.history_ = state
        self.n_train_windows_ = len(train_index)
        return self._calibrate(tubes)

    def recalibrated(self, cfg: Config, tubes: list[RegionTube]) -> "RegionDetector":
        """A new detector with these weights and its statistics computed under ``cfg``
        (which may differ from the fitted config in ``[score]`` only)."""
        self._require_fitted()
        require_config("checkpoint", self.cfg, cfg, f"the {self.region.region_id} detector", "train it again", with_recalibrate=False)
        other = RegionDetector(cfg, self.region, self.frame_size)
        for name in ("model_", "device_", "history_", "n_train_windows_", "training_clips_"):
            if hasattr(self, name):
                setattr(other, name, getattr(self, name))
        return other._calibrate(tubes)

    def _calibrate(self, tubes: list[RegionTube], settle: tuple[set[str], float] | None = None, held: list[np.ndarray] | None = None) -> "RegionDetector":
        """Score the normal clips exactly as new video is scored, and keep what normal looks like to every stream.

        The statistics come from every normal frame (``score.calibrate_on = "all"``) or
        only from the blocks held out from training (``"held_out"``); the held-out blocks'
        scores are kept either way (``held_out_scores_``): frames the weights were not
        fitted on, from which the alarm threshold is set. A stream with a reference built
        from the normal video (the novelty's bank) measures each segment of it against
        the reference without that segment, as new video would be (``ensemble.streams.base``).
        Each stream's spread is then widened where flow noise alone would move it (:meth:`_widen_for_jitter`).
        ``settle = (clip ids, threshold)``: those clips are stretches an operator marked as normal; they take no part
        in the statistics or the references (the novelty's bank), and :attr:`absorbed_` says how much a region's z
        are divided, and from which motion on, for none of their frames to score above a share :data:`SETTLE` of the
        threshold (:meth:`_absorb`). ``held``: which frames of each clip are held out, if not the usual blocks.
        """
        s, t = self.cfg.score, self.cfg.train
        marked_ids = settle[0] if settle is not None else set()
        lengths = [len(x.tube) for x in tubes]
        held = held if held is not None else validation_masks(lengths, t.val_block_frames, t.val_fraction)
        pieces: list[tuple[np.ndarray, dict, np.ndarray]] = []  # (tube piece, the references it is measured against, held-out frames)
        owners: list[str] = []  # each piece's clip
        if not any(stream.leaves_segment_out for stream, _ in self.streams):
            references = {stream.name: None for stream, _ in self.streams}
            pieces = [(x.tube, references, h) for x, h in zip(tubes, held)]  # per clip
            owners = [x.clip_id for x in tubes]
        else:
            segments = segment_ids(lengths)
            # built from the normal video alone; a marked clip's segments are not in it, so it is measured against all of it
            normal = [i for i, x in enumerate(tubes) if x.clip_id not in marked_ids]
            references = {stream.name: stream.reference(self._encode, [tubes[i].tube for i in normal], [segments[i] for i in normal], self.cfg) for stream, _ in self.streams}
            for x, seg, h in zip(tubes, segments, held):
                for sid in np.unique(seg):
                    apart = {stream.name: stream.without_segment(references[stream.name], sid) for stream, _ in self.streams}
                    pieces.append((x.tube[seg == sid], apart, h[seg == sid]))
                    owners.append(x.clip_id)
        cells = [self._cell_maps(tube, refs) for tube, refs, _ in pieces]  # per piece: (n, n_maps, K)
        held = [h for _, _, h in pieces]
        use = held if s.calibrate_on == "held_out" else [np.ones(len(m), bool) for m in held]
        use = [u & (owner not in marked_ids) for u, owner in zip(use, owners)]
        self.fitted_ = {
            stream.name: stream.fit([c[:, self.layout[stream.name]] for c in cells], use, self.cfg, references[stream.name]) for stream, _ in self.streams
        }
        if s.flow_jitter_px > 0 and self.cfg.tube_content == "flow":
            self._widen_for_jitter(pieces, cells, use)
        self.absorbed_ = Absorbed()
        if settle is not None:
            self.absorbed_ = self._absorb([c for c, owner in zip(cells, owners) if owner in marked_ids], settle[1])
        self._scoring_references = None
        scores = [self._chain(c)[1] for c in cells]
        self.held_out_scores_ = np.concatenate([x[m] for x, m in zip(scores, held)]).astype(np.float32)
        # the held-out frames' contiguous stretches, in that order: an event never spans two of them
        self.held_out_runs_ = [b - a for m in held for a, b in runs(m)]
        self.fps_ = float(np.median([x.fps for x in tubes]))
        self.threshold_ = alarm_threshold(self.held_out_scores_, s.false_alarm_rate)
        return self

    def _widen_for_jitter(self, pieces: list[tuple[np.ndarray, dict, np.ndarray]], cells: list[np.ndarray], use: list[np.ndarray]) -> None:
        """Widen each stream's spread until flow noise of ``score.flow_jitter_px`` (frame pixels a frame) moves its
        region z by at most 1 on 90% of the normal frames.

        A region where nothing normally moves (a lawn, a wall) has a spread near zero, and any tenth of a pixel of
        flow that a shaken, noisy or compressed camera leaves would be many z there; where people walk, such noise
        is lost in the normal spread and nothing changes. The normal video is scored again with Gaussian noise of
        that size added to its flow, each frame's z compared with its clean one.
        """
        s = self.cfg.score
        rng = np.random.default_rng([self.cfg.train.seed, self.region.row, self.region.col])
        P = self.cfg.cuboids.patch_size
        # flow codes per frame pixel, along x and along y (core.tubes)
        sigma = s.flow_jitter_px * FLOW_GAIN * np.array([P / self.region.width, P / self.region.height], np.float32).reshape(1, 2, 1, 1)
        jittered = []
        for tube, refs, _ in pieces:
            # noise as smooth as optical flow's own: drawn on a grid of cells, each cell's value over its pixels
            n, C = tube.shape[:2]
            k = self.cfg.score.cell_size
            noise = rng.standard_normal((n, C, P // k, P // k), dtype=np.float32).repeat(k, axis=2).repeat(k, axis=3)
            noisy = tube.astype(np.float32) + noise * sigma
            jittered.append(self._cell_maps(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), refs))
        for stream, _ in self.streams:
            fitted = self.fitted_[stream.name]
            sl = self.layout[stream.name]
            delta = [stream.chain(fitted.stats, self.cfg)(j[:, sl])[1] - stream.chain(fitted.stats, self.cfg)(c[:, sl])[1] for c, j in zip(cells, jittered)]
            delta = np.concatenate([d[m] for d, m in zip(delta, use)])
            self._widen(stream.name, max(1.0, float(np.quantile(delta, 0.9))) if len(delta) else 1.0)

    def _absorb(self, marked: list[np.ndarray], threshold: float) -> Absorbed:
        """What the region must learn for no frame of the marked stretches' cell maps ``marked`` to score above a
        share :data:`SETTLE` of ``threshold`` (:class:`ensemble.fusion.Absorbed`).

        The cells that carry the marked frames' scores are absorbed one round at a time: on every marked frame still
        above that share, each weighed stream's top cell is added; when a round adds none, the factor grows by the
        highest such score over the share. The bar is a share :data:`ABSORB_ENERGY` of the absorbed cells' gate
        energy on the slowest marked frame that scored above it. A stretch that needs more than :data:`CELLS_MAX` of
        the region's cells (or does not settle cell by cell within every cell and :data:`ROUNDS` more rounds) is
        absorbed by the whole region instead: its z divided by the stretch's top score over the
        share, while its largest cell moves as the stretch did. A flag flapping in a corner, or a walker whose flow
        was blocky where people enter a busy region, is absorbed in its few cells, and whoever walks or rides in the
        rest of the region scores in full; headlights sweeping a lawn, which light other cells next time than in the
        marked sweep, are absorbed by the whole region, and a person walking there while no lights sweep still
        scores in full. Absorbing whole regions whatever moved (as this did first) cost Ped2's anomalies 1.5 to 2.5
        points of detection in the headlights case; gating them by motion, 0 to 0.4, but 3 to 4.3 where a blocky
        walker was marked; cells alone left 2 to 18 of 26 headlights false events (docs/experiments.md)."""
        share = SETTLE * threshold
        base = []  # each stretch's frames above the share before anything is absorbed, and its cells' gate energies
        top = -np.inf  # the stretches' top score before anything is absorbed
        for c in marked:
            chain = self.score_chain(Absorbed())
            score = chain(c)[1]
            over, top = score > share, max(top, float(score.max()))
            base.append((over, None if chain.energy is None else chain.energy[over]))
        if threshold <= 0 or not any(over.any() for over, _ in base):
            return Absorbed()
        cells: set[int] = set()
        factor = 1.0
        weighed = [i for i, (_, w) in enumerate(self.streams) if w > 0]
        K = marked[0].shape[-1]
        for _ in range(K + ROUNDS):
            absorbed = Absorbed(self._bar(base, sorted(cells)), factor, tuple(sorted(cells))) if cells else Absorbed()
            worst, tops = -np.inf, set()
            for c in marked:
                chain = self.score_chain(absorbed)
                score = chain(c)[1]
                over = np.flatnonzero(score > share)
                if len(over):
                    worst = max(worst, float(score[over].max()))
                    tops |= {int(k) for i in weighed for k in chain.stream_cells[i][over].argmax(axis=-1)}
            if not tops:
                break
            if tops <= cells:
                factor *= worst / share
            cells |= tops
            if len(cells) > CELLS_MAX:  # the whole region's, whatever more rounds would add
                break
        else:
            cells = set(range(K))  # not settled cell by cell
        if len(cells) <= CELLS_MAX:
            return absorbed
        return Absorbed(self._bar(base, list(range(K))), top / share)

    @staticmethod
    def _bar(base: list[tuple[np.ndarray, np.ndarray | None]], cells: list[int]) -> float:
        """A share :data:`ABSORB_ENERGY` of ``cells``' gate energy on the slowest of the frames in ``base``."""
        lows = [float(energy[:, cells].max(axis=-1).min()) for over, energy in base if energy is not None and over.any()]
        return ABSORB_ENERGY * min(lows) if lows else 0.0

    def _widen(self, stream: str, factor: float) -> None:
        """Multiply a stream's normal spread by ``factor``: its z shrink by as much, its mean stays."""
        f = self.fitted_[stream]
        self.fitted_[stream] = replace(f, stats=replace(f.stats, std=f.stats.std * factor))

    def absorbed(self, marked: list[RegionTube], normal: list[RegionTube], threshold: float, epochs: int = 3, device: str | None = None) -> "RegionDetector":
        """A new detector that has learnt stretches an operator marked as normal, without training from scratch.

        The autoencoder is fine-tuned for ``epochs`` epochs, at a tenth of the learning rate, on every window of
        ``marked`` mixed with a replay of :data:`REPLAY` times as many of its own training windows from ``normal``
        (so that it does not forget them), validated on ``normal``'s held-out blocks; then every stream is fitted
        again on ``normal`` (with the tuned weights) and the marked stretches absorbed (:meth:`_absorb`: while the
        cells that carried them, or the whole region, move as they did, their z are divided until no marked frame
        scores above a share :data:`SETTLE` of ``threshold``; ``absorbed_.factor``: by how much). The weights and
        statistics of ``self`` are not touched.
        """
        self._require_fitted()
        device = device or str(self.device_)
        T = self.cfg.cuboids.clip_length_in_frames
        t = self.cfg.train
        frames, train_index, val_index = self._split(normal)
        offset, new_rows = len(frames), []
        for x in marked:
            starts = np.arange(0, max(len(x.tube) - T, 0) + 1)
            new_rows.append(window_index(starts + offset, T, self.needs_previous, offset, offset + len(x.tube) - 1))
            offset += len(x.tube)
        new_index = np.concatenate(new_rows) if new_rows else np.zeros((0, train_index.shape[1]), np.int64)
        rng = np.random.default_rng([t.seed, 0xFEED])
        replay = train_index[rng.choice(len(train_index), min(len(train_index), REPLAY * max(len(new_index), 1)), replace=False)]
        frames = np.concatenate([frames, *[x.tube for x in marked]])
        model = self.build_model()
        model.load_state_dict(self.model_.state_dict())
        tune = replace(t, epochs=epochs, learning_rate=t.learning_rate / 10, patience=epochs, max_windows_per_epoch=0)
        best, history = fit_autoencoder(model, frames, np.concatenate([new_index, replay]), val_index, lambda w: encode_windows(w, self.cfg.model.input),
                                        tune, torch.device(device))  # fmt: skip
        model.load_state_dict(best)
        other = RegionDetector(self.cfg, self.region, self.frame_size)
        other.model_, other.device_ = model.eval(), torch.device(device)
        other.history_, other.n_train_windows_ = self.history_, getattr(self, "n_train_windows_", 0)
        other.training_clips_ = getattr(self, "training_clips_", {})
        other.tuned_ = history
        # the held-out frames stay the normal video's blocks (the marked stretches are never held out), so the
        # changed regions and the others keep scoring the same held-out frames
        held = validation_masks([len(x.tube) for x in normal], t.val_block_frames, t.val_fraction) + [np.zeros(len(x.tube), bool) for x in marked]
        return other._calibrate(normal + marked, settle=({x.clip_id for x in marked}, threshold), held=held)

    # -- scoring ----------------------------------------------------------------------------

    def _require_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError(f"detector for {self.region.region_id} is not fitted")

    @property
    def references(self) -> dict[str, torch.Tensor | None]:
        """What each stream measures new video against (the fitted references, as tensors, made once)."""
        if getattr(self, "_scoring_references", None) is None:
            self._scoring_references = {stream.name: stream.scoring_reference(self.fitted_[stream.name]) for stream, _ in self.streams}
        return self._scoring_references

    @torch.inference_mode()
    def window_maps(self, windows: np.ndarray, references: dict[str, torch.Tensor | None] | None = None) -> np.ndarray:
        """uint8 windows ``(B, T', C, P, P)`` -> float32 ``(B, T, n_maps, P, P)``: for every pixel the reconstruction as
        shown (:func:`shown_reconstruction`), then each stream's maps (:attr:`layout`). ``references``: what the streams
        measure against, if not the fitted ones."""
        self._require_fitted()
        mode = self.cfg.model.input
        x = encode_windows(windows, mode).to(self.device_)
        features, code = self.model_.encode_features(x)
        y = self.model_.decode(code)
        fwd = Forward(x, features, code, y, mode)
        references = self.references if references is None else references
        maps = [shown_reconstruction(y, windows, mode)[:, :, None]]
        maps += [stream.pixel_maps(fwd, references[stream.name], self.cfg) for stream, _ in self.streams]
        return torch.cat(maps, dim=2).numpy()

    @torch.inference_mode()
    def _encode(self, windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 windows -> the encoder's (features, code)."""
        return self.model_.encode_features(encode_windows(windows, self.cfg.model.input).to(self.device_))

    def _cell_maps(self, tube: np.ndarray, references: dict[str, torch.Tensor | None] | None = None) -> np.ndarray:
        """One clip's tube ``(n, C, P, P)`` -> its cell means of every map ``(n, n_maps, K)``."""
        T = self.cfg.cuboids.clip_length_in_frames
        fn = self.window_maps if references is None else (lambda w: self.window_maps(w, references))
        maps = score_tubes([fn], self.n_maps, tube[None], T, self.cfg.score.frames_between_clips, self.needs_previous)[:, 0]
        return cell_means(maps, self.cfg.score.cell_size)

    def score_chain(self, absorbed: Absorbed | None = None) -> ScoreChain:
        """A fresh chain (smoothing from the normal level) over this region's cell maps, with what it absorbed
        (or ``absorbed``)."""
        return ScoreChain(self.streams, [self.fitted_[s.name].stats for s, _ in self.streams], self.cfg, absorbed or self.absorbed_)

    def _chain(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cell maps ``(n, n_maps, K)`` of one clip -> cell z ``(n, K)``, region score ``(n,)``, stream z ``(n, S)``."""
        return self.score_chain()(cells)

    def cell_scores(self, tube: np.ndarray) -> np.ndarray:
        """One clip's tube ``(n, C, P, P)`` uint8 -> every cell's z ``(n, K)``."""
        self._require_fitted()
        return self._chain(self._cell_maps(tube))[0]

    def decision_function(self, tube: np.ndarray) -> np.ndarray:
        """One clip's tube ``(n, C, P, P)`` uint8 -> ``(n,)``: each frame's score (the streams' region z weighed),
        higher = more anomalous."""
        self._require_fitted()
        return self._chain(self._cell_maps(tube))[1]

    def predict(self, tube: np.ndarray) -> np.ndarray:
        """One clip's tube -> ``(n,)`` 0/1: 1 for the frames whose score exceeds ``threshold_``."""
        return (self.decision_function(tube) > self.threshold_).astype(np.int64)

    # -- persistence ------------------------------------------------------------------------

    def to_checkpoint(self, training_clips: dict[str, str]) -> dict[str, Any]:
        self._require_fitted()
        r = self.region
        return {
            **stamp_dict("checkpoint", self.cfg),
            "region": {"region_id": r.region_id, "row": r.row, "col": r.col, "top": r.top, "left": r.left, "height": r.height, "width": r.width},
            "frame_size": list(self.frame_size),
            "state_dict": {k: v.detach().cpu() for k, v in self.model_.state_dict().items()},
            "streams": {name: f.to_dict() for name, f in self.fitted_.items()},
            "held_out_scores": torch.from_numpy(np.asarray(self.held_out_scores_, np.float32)),
            "held_out_runs": [int(r) for r in self.held_out_runs_],
            "fps": float(self.fps_),
            "history": self.history_.to_dict() | {"n_train_windows": int(getattr(self, "n_train_windows_", 0))},
            "training_clips": dict(training_clips),
            **({"feedback": self.feedback_} if getattr(self, "feedback_", None) else {}),
            **({"absorbed": asdict(self.absorbed_)} if self.absorbed_ != Absorbed() else {}),
        }

    def save(self, path: str | Path, training_clips: dict[str, str]) -> Path:
        with atomic_path(path) as tmp:
            torch.save(self.to_checkpoint(training_clips), tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, cfg: Config | None = None, device: str = "cpu", with_score: bool = True) -> "RegionDetector":
        """Rebuild a fitted detector from its checkpoint alone; with ``cfg``, refuse other settings.

        ``with_score=False`` accepts other ``[score]`` settings and checkpoints of an older
        format whose weights still hold (their statistics are not read): for :meth:`recalibrated`.
        """
        path = Path(path)
        ck = read_checkpoint(path, weights_only=not with_score)
        recorded = Config.from_json(ck["config"], source=str(path))
        if cfg is not None:
            require_config("checkpoint", recorded, cfg, path, "re-run `train` with this config", with_recalibrate=with_score)
        det = cls(recorded, Region(**ck["region"]), tuple(ck["frame_size"]))
        model = det.build_model()
        try:
            model.load_state_dict(ck["state_dict"])
        except (RuntimeError, KeyError) as exc:
            raise ArtifactError(f"{path}: weights do not fit the recorded model ({str(exc).splitlines()[0]})") from None
        det.model_ = model.to(device).eval()
        det.device_ = torch.device(device)
        if ck["format_version"] == KINDS["checkpoint"].version:
            det.fitted_ = {name: Fitted.from_dict(ck["streams"][name]) for name in det.stream_names}
            det.held_out_scores_ = ck["held_out_scores"].numpy()
            det.held_out_runs_ = list(ck.get("held_out_runs", [len(det.held_out_scores_)]))
            det.fps_ = float(ck.get("fps", 10.0))
            det.threshold_ = alarm_threshold(det.held_out_scores_, recorded.score.false_alarm_rate)
            absorbed = ck.get("absorbed", {})
            det.absorbed_ = Absorbed(**{**absorbed, **({"cells": tuple(absorbed["cells"])} if absorbed.get("cells") is not None else {})})
        det.history_ = TrainState(**{k: v for k, v in ck["history"].items() if k in TrainState.__dataclass_fields__})
        det.n_train_windows_ = int(ck["history"].get("n_train_windows", 0))
        det.training_clips_ = dict(ck["training_clips"])
        if "feedback" in ck:
            det.feedback_ = ck["feedback"]
        return det


WEIGHTS_READABLE = (1, 2)  # older checkpoint versions whose weights (not statistics) this program reads


def read_checkpoint(path: Path, weights_only: bool = False) -> dict[str, Any]:
    """A checkpoint dict, loaded without unpickling arbitrary objects, with its stamp checked
    (``weights_only``: an older version whose weights still load is accepted too)."""
    if not path.exists():
        raise ArtifactError(f"{path}: missing; run `train` first")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ArtifactError(f"{path}: not a readable checkpoint (truncated or foreign: {str(exc).splitlines()[0][:120]})") from None
    kind = KINDS["checkpoint"]
    if not isinstance(ck, dict) or ck.get("format") != kind.tag:
        raise ArtifactError(f"{path}: not a cuboid-ad checkpoint")
    if ck.get("format_version") != kind.version and not (weights_only and ck.get("format_version") in WEIGHTS_READABLE):
        raise ArtifactError(f"{path}: checkpoint format version {ck.get('format_version')}, expected {kind.version}; re-run `train --force`")
    return ck
