"""Fitting and running the supervised classifier on labelled clips: arrays in, arrays out.

A *window* is the T frames ending at one frame, and takes that frame's label,
so a frame's class probabilities come from the frames up to it only (the same
causal windows serve ``classify``, and fusion into ``score``, which must not see
the future). The first T - 1 frames of a clip repeat its first frame.

Training windows are chosen every ``frames_between_windows`` frames, skipping a
window whose last frame is almost the same picture (SSIM above
``ssim_threshold``) as the last window kept of the same class, so that long still
stretches do not drown the informative ones. Every epoch draws its order and
augmentation from ``(seed, epoch)``, so a run resumed from an epoch's snapshot
ends exactly as an uninterrupted one would.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cuboid_ad.core.artifacts import check_stamp, require_config
from cuboid_ad.core.config import Config, SuperviseConfig
from cuboid_ad.core.errors import ArtifactError
from cuboid_ad.ensemble.classifier import AttentionClassifier3D
from cuboid_ad.ensemble.fit import TrainingStopped, TrainState, restore
from cuboid_ad.ensemble.metrics import balanced_accuracy


@dataclass
class LabelledClip:
    """One clip at the classifier's size: frames uint8 ``(n, C, h, w)`` and each frame's class index ``(n,)``."""

    clip_id: str
    frames: np.ndarray
    labels: np.ndarray


def input_size(height: int, width: int, target_height: int) -> tuple[int, int]:
    """(h, w) of the classifier's input for frames of ``height`` x ``width``: the target height, the width by aspect."""
    return target_height, max(8, int(round(width * target_height / height)))


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 frames ``(n, H, W, C)`` -> uint8 ``(n, C, h, w)`` by area averaging (what every path through the classifier uses)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="area")
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean structural similarity (Wang et al. 2004, Gaussian window 7 px, sigma 1.5) of frame pairs ``(n, C, h, w)`` uint8 -> ``(n,)``."""
    x = torch.from_numpy(a).double()
    y = torch.from_numpy(b).double()
    n, c = x.shape[:2]
    g = torch.exp(-((torch.arange(7, dtype=torch.float64) - 3) ** 2) / (2 * 1.5**2))
    g = (g / g.sum()).outer(g / g.sum()).expand(c, 1, 7, 7)

    def blur(t):
        return F.conv2d(t, g, groups=c)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.reshape(n, -1).mean(dim=1).numpy()


def select_windows(clip: LabelledClip, window_frames: int, stride: int, ssim_threshold: float) -> np.ndarray:
    """Last-frame indices of the training windows of one clip, near-duplicates skipped (see the module's doc)."""
    ends = np.arange(window_frames - 1, len(clip.frames), stride)
    if ssim_threshold >= 1.0 or len(ends) == 0:
        return ends
    kept, last = [ends[0]], ends[0]
    for e in ends[1:]:
        if clip.labels[e] != clip.labels[last] or ssim(clip.frames[e : e + 1], clip.frames[last : last + 1])[0] <= ssim_threshold:
            kept.append(e)
            last = e
    return np.array(kept, dtype=np.int64)


def window_stack(frames: np.ndarray, ends: np.ndarray, window_frames: int) -> np.ndarray:
    """uint8 ``(n, C, h, w)`` -> windows ``(len(ends), C, T, h, w)`` ending at ``ends`` (the first frame repeated before the start)."""
    idx = np.clip(ends[:, None] - np.arange(window_frames - 1, -1, -1)[None, :], 0, None)
    return frames[idx].transpose(0, 2, 1, 3, 4)


def augment(x: torch.Tensor, rng: np.random.Generator, flip: bool = False) -> torch.Tensor:
    """Random brightness and contrast, shifts of up to 1/8 of the frame and, with ``flip``, horizontal flips, per window.

    x: float ``(B, C, T, h, w)`` in [0, 1]. Vertical flips are left out: a fixed camera's
    scene is never upside down.
    """
    B, _, _, h, w = x.shape
    out = x.clone()
    flipped = rng.random(B) < 0.5
    if flip:
        out[flipped] = out[flipped].flip(-1)
    contrast = torch.from_numpy(rng.uniform(0.8, 1.2, B)).float().view(B, 1, 1, 1, 1)
    bright = torch.from_numpy(rng.uniform(-0.1, 0.1, B)).float().view(B, 1, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3, 4), keepdim=True)
    out = ((out - mean) * contrast + mean + bright).clamp(0, 1)
    my, mx = max(1, h // 8), max(1, w // 8)
    padded = F.pad(out.flatten(1, 2), (mx, mx, my, my), mode="replicate").view(B, x.shape[1], x.shape[2], h + 2 * my, w + 2 * mx)
    dy, dx = rng.integers(0, 2 * my + 1, B), rng.integers(0, 2 * mx + 1, B)
    return torch.stack([padded[i, :, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(B)])


def split_clips(clips: list[LabelledClip], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Clip indices for training and validation: whole clips, never windows of one clip on both sides.

    Clips are grouped by the classes they hold; each group of two or more gives
    ``val_fraction`` of its clips (at least one) to validation, so every class that
    can be is seen on both sides.
    """
    rng = np.random.default_rng(seed)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, c in enumerate(clips):
        groups.setdefault(tuple(np.unique(c.labels).tolist()), []).append(i)
    val: list[int] = []
    for key in sorted(groups):
        members = groups[key]
        if len(members) >= 2:
            chosen = rng.permutation(members)[: max(1, int(round(val_fraction * len(members))))]
            val += sorted(int(i) for i in chosen)
    if not val:
        return list(range(len(clips))), []
    return [i for i in range(len(clips)) if i not in val], sorted(val)


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights (mean 1 over the classes present): each class counts as much as the others."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (np.count_nonzero(counts) * np.maximum(counts, 1)), 0.0)
    return w


@dataclass
class ClassifierState(TrainState):
    """A :class:`TrainState` that also records the validation clips' balanced accuracy after every epoch."""

    val_balanced_accuracy: list[float] = field(default_factory=list)


def build_classifier(cfg: SuperviseConfig, channels: int, n_classes: int) -> AttentionClassifier3D:
    torch.manual_seed(cfg.seed)
    return AttentionClassifier3D(channels, cfg.filters, n_classes)


def fit_classifier(
    model: nn.Module,
    clips: list[LabelledClip],
    train_windows: list[tuple[int, np.ndarray]],
    val_windows: list[tuple[int, np.ndarray]],
    n_classes: int,
    cfg: SuperviseConfig,
    device: str = "cpu",
    resume: dict[str, Any] | None = None,
    on_epoch: Callable[[ClassifierState, dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[dict[str, torch.Tensor], ClassifierState]:
    """Train with class-weighted cross-entropy; keep the weights of the best validation loss; stop after ``patience`` worse epochs.

    ``*_windows``: (clip index, last-frame indices) pairs. Without validation windows the
    last epoch's weights are kept. Returns the best weights and the training record.
    """
    train = np.array([(c, e) for c, ends in train_windows for e in ends], dtype=np.int64).reshape(-1, 2)
    val = np.array([(c, e) for c, ends in val_windows for e in ends], dtype=np.int64).reshape(-1, 2)
    train_labels = np.array([clips[c].labels[e] for c, e in train], dtype=np.int64)
    weights = torch.from_numpy(class_weights(train_labels, n_classes)).float().to(device)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=1e-4)
    best, state = restore(model, opt, resume, ClassifierState)
    T, jitter = cfg.window_frames, cfg.frames_between_windows // 2
    while state.epoch + 1 < cfg.epochs and not state.stopped_early:
        epoch = state.epoch + 1
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout: the same masks after a resume
        order = rng.permutation(len(train))
        model.train()
        total, count = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            if should_stop is not None and should_stop():
                raise TrainingStopped(f"stopped during epoch {epoch}")
            rows = train[order[i : i + cfg.batch_size]]
            x, y = _batch(clips, rows, T, rng.integers(-jitter, jitter + 1, len(rows)) if cfg.augment else None)
            if cfg.augment:
                x = augment(x, rng, cfg.flip)
            logits, _ = model(x.to(device))
            loss = loss_fn(logits, y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
            count += len(rows)
        state.epoch = epoch
        state.train_loss.append(total / max(count, 1))
        if len(val):
            v_loss, v_bacc = _validate(model, clips, val, T, loss_fn, cfg.batch_size, device)
            state.val_loss.append(v_loss)
            state.val_balanced_accuracy.append(v_bacc)
            if state.improved(v_loss, epoch, cfg.patience):
                best = copy.deepcopy(model.state_dict())
        else:
            state.best_epoch = epoch
            best = copy.deepcopy(model.state_dict())
        state.seconds += time.perf_counter() - t0
        if on_epoch is not None:
            on_epoch(state, {"model": model.state_dict(), "optimizer": opt.state_dict(), "best": best, "state": state.to_dict()})
    return best, state


def _batch(clips: list[LabelledClip], rows: np.ndarray, T: int, jitter: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows (B, C, T, h, w) in [0, 1] and their labels for (clip, last frame) rows; ``jitter`` moves each window by a few frames."""
    xs, ys = [], []
    for k, (c, e) in enumerate(rows):
        clip = clips[c]
        if jitter is not None:
            e = int(np.clip(e + jitter[k], T - 1, len(clip.frames) - 1))
        xs.append(window_stack(clip.frames, np.array([e]), T)[0])
        ys.append(clip.labels[e])
    return torch.from_numpy(np.stack(xs)).float() / 255.0, torch.tensor(ys, dtype=torch.int64)


@torch.inference_mode()
def _validate(model, clips, rows, T, loss_fn, batch_size, device) -> tuple[float, float]:
    model.eval()
    total, preds, truth = 0.0, [], []
    for i in range(0, len(rows), batch_size):
        x, y = _batch(clips, rows[i : i + batch_size], T, None)
        logits, _ = model(x.to(device))
        total += float(loss_fn(logits, y.to(device))) * len(y)
        preds.append(logits.argmax(1).cpu().numpy())
        truth.append(y.numpy())
    return total / len(rows), balanced_accuracy(np.concatenate(truth), np.concatenate(preds))


class ClassifierStream:
    """Per-frame class probabilities and attention maps of a clip fed chunk by chunk (causal windows)."""

    def __init__(self, model: nn.Module, window_frames: int, size: tuple[int, int], device: str = "cpu", batch_windows: int = 32):
        self.model = model.to(device).eval()
        self.T, self.size, self.device, self.batch = window_frames, size, device, batch_windows
        self.history: np.ndarray | None = None  # the last T - 1 frames, (T - 1, C, h, w)

    def reset(self) -> None:
        """Start a new clip (a live stream reconnected): its first frame fills the window again."""
        self.history = None

    @torch.inference_mode()
    def push(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 frames ``(n, H, W, C)`` -> (probabilities ``(n, K)``, attention ``(n, h', w')``) of those frames."""
        small = resize_frames(frames, self.size)
        if self.history is None:
            self.history = np.repeat(small[:1], self.T - 1, axis=0)
        seq = np.concatenate([self.history, small])
        ends = np.arange(self.T - 1, len(seq))
        probs, maps = [], []
        for i in range(0, len(ends), self.batch):
            x = torch.from_numpy(window_stack(seq, ends[i : i + self.batch], self.T)).float().div_(255.0)
            logits, amap = self.model(x.to(self.device))
            probs.append(torch.softmax(logits, 1).cpu().numpy())
            maps.append(amap.cpu().numpy())
        self.history = seq[len(seq) - (self.T - 1) :]
        return np.concatenate(probs), np.concatenate(maps)


# -- the classifier file (`supervise` writes it: WORK/classifier/model.pt) ---------------------------------


def read_classifier(path: str | Path, cfg: Config | None = None) -> dict[str, Any]:
    """A checked classifier file; with ``cfg``, refused unless made with the same [extract] and [supervise]."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no classifier; run `supervise` first")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise ArtifactError(f"{path}: not a readable classifier (truncated or foreign); delete it and run `supervise` again") from None
    if not isinstance(ck, dict):
        raise ArtifactError(f"{path}: not a classifier file")
    check_stamp(ck, "classifier", path)
    recorded = Config.from_json(ck["config"], source=str(path))
    if cfg is not None:
        require_config("classifier", recorded, cfg, path, "run `supervise` with this config")
    ck["cfg"] = recorded
    return ck


def load_classifier(path: str | Path, cfg: Config | None = None, device: str = "cpu") -> tuple[dict[str, Any], AttentionClassifier3D]:
    """A classifier file (see :func:`read_classifier`) and its network, weights loaded, in eval mode."""
    ck = read_classifier(path, cfg)
    model = AttentionClassifier3D(ck["channels"], ck["cfg"].supervise.filters, len(ck["classes"]))
    model.load_state_dict(ck["weights"])
    return ck, model.to(device).eval()
