"""Fitting one autoencoder on normal windows: the split and the loop.

The loop knows nothing of regions, files or thresholds: it gets frames, the
frame indices of training and validation windows, and a function that turns
a batch of uint8 windows into model input. Each epoch's window order is drawn
from ``(seed, epoch)``, so a run resumed from an epoch checkpoint continues
exactly as an uninterrupted one would.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cuboid_ad.core.config import TrainConfig


def validation_masks(clip_frames: list[int], block_frames: int, val_fraction: float) -> list[np.ndarray]:
    """Which frames of each clip are held out: whole blocks of ``block_frames``, evenly spread.

    Blocks, not random windows, so that no validation window has a training
    window a frame away. The clips' blocks are numbered one after the other and
    round(val_fraction x blocks) of them, at least one, are held out at even
    spacing, so short clips and small datasets still get a validation set.
    """
    n_blocks = [-(-n // block_frames) for n in clip_frames]
    total = sum(n_blocks)
    n_val = min(total - 1, max(1, int(round(val_fraction * total))))
    held = np.zeros(total, bool)
    if n_val > 0:
        held[np.floor((np.arange(n_val) + 0.5) * total / n_val).astype(int)] = True
    bounds = np.cumsum([0, *n_blocks])
    return [np.repeat(held[a:b], block_frames)[:n] for a, b, n in zip(bounds[:-1], bounds[1:], clip_frames)]


def split_windows(mask: np.ndarray, starts: np.ndarray, clip_length: int, with_previous: bool) -> tuple[np.ndarray, np.ndarray]:
    """Window starts whose frames are all training / all validation; windows straddling both are dropped."""
    lo = np.maximum(starts - (1 if with_previous else 0), 0)
    hi = starts + clip_length
    csum = np.concatenate([[0], np.cumsum(mask)])
    n_val = csum[hi] - csum[lo]
    return starts[n_val == 0], starts[n_val == hi - lo]


@dataclass
class TrainState:
    """Everything needed to continue training after ``epoch`` (0-based, completed)."""

    epoch: int = -1
    best_val: float = float("inf")
    best_epoch: int = -1
    bad_epochs: int = 0
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def improved(self, val_loss: float, epoch: int, patience: int) -> bool:
        """Record ``epoch``'s validation loss: True when it is the best so far; after ``patience`` epochs without one, stop."""
        if val_loss < self.best_val:
            self.best_val, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            return True
        self.bad_epochs += 1
        self.stopped_early = self.bad_epochs >= patience
        return False


def restore(model: nn.Module, opt: torch.optim.Optimizer, resume: dict[str, Any] | None, state_type: type[TrainState]) -> tuple[dict[str, torch.Tensor], TrainState]:
    """Load an epoch's snapshot (from ``on_epoch``) into ``model`` and ``opt``; returns the best weights so far and
    the training record. Without one: the model's current weights and a fresh record."""
    if resume is None:
        return copy.deepcopy(model.state_dict()), state_type()
    model.load_state_dict(resume["model"])
    opt.load_state_dict(resume["optimizer"])
    return resume["best"], state_type(**resume["state"])


_VALIDATION_DRAW = 2**32 - 1  # the random stream of the validation windows' draw, apart from every epoch's (seed, epoch)


class TrainingStopped(Exception):
    """Training was asked to stop; what the last finished epoch saved is kept."""


def fit_autoencoder(
    model: nn.Module,
    frames: np.ndarray,
    train_index: np.ndarray,
    val_index: np.ndarray,
    encode: Callable[[np.ndarray], torch.Tensor],
    cfg: TrainConfig,
    device: torch.device,
    resume: dict[str, Any] | None = None,
    on_epoch: Callable[[TrainState, dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[dict[str, torch.Tensor], TrainState]:
    """Train ``model`` to reconstruct its input with MSE; early stopping on validation loss.

    frames: uint8 ``(n_frames, C, P, P)``; ``*_index``: ``(n_windows, T')`` rows of frame indices.
    ``resume``: a dict from a previous ``on_epoch`` call (model, optimizer, best weights, state).
    ``should_stop``: polled before every batch; when it returns True the
    unfinished epoch is dropped and :class:`TrainingStopped` is raised.
    ``cfg.max_windows_per_epoch``: an epoch trains on at most that many windows, a new random
    draw each epoch, and validates on at most that many, the same draw every epoch (so that
    epochs compare); with hours of footage an epoch then costs about what a short one does.
    Returns the best weights and the training record.
    """
    cap = cfg.max_windows_per_epoch
    if cap and len(val_index) > cap:
        keep = np.random.default_rng([cfg.seed, _VALIDATION_DRAW]).choice(len(val_index), cap, replace=False)
        val_index = val_index[np.sort(keep)]
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    best, state = restore(model, opt, resume, TrainState)
    loss_fn = nn.MSELoss()
    while state.epoch + 1 < cfg.epochs and not state.stopped_early:
        epoch = state.epoch + 1
        t0 = time.perf_counter()
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_index))
        if cap:
            order = order[:cap]
        model.train()
        total, count = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            if should_stop is not None and should_stop():
                raise TrainingStopped(f"stopped during epoch {epoch}")
            x = encode(frames[train_index[order[i : i + cfg.batch_size]]]).to(device)
            loss = loss_fn(model(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(x)
            count += len(x)
        val = evaluate_loss(model, frames, val_index, encode, cfg.batch_size, device)
        state.epoch = epoch
        state.train_loss.append(total / max(count, 1))
        state.val_loss.append(val)
        if state.improved(val, epoch, cfg.patience):
            best = copy.deepcopy(model.state_dict())
        state.seconds += time.perf_counter() - t0
        if on_epoch is not None:
            on_epoch(state, {"model": model.state_dict(), "optimizer": opt.state_dict(), "best": best, "state": state.to_dict()})
    return best, state


@torch.inference_mode()
def evaluate_loss(model: nn.Module, frames: np.ndarray, index: np.ndarray, encode, batch_size: int, device) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(index), batch_size):
        x = encode(frames[index[i : i + batch_size]]).to(device)
        total += float(((model(x) - x) ** 2).mean()) * len(x)
        count += len(x)
    return total / max(count, 1)
