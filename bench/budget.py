"""What a published from-scratch frame predictor would cost to train on this machine.

    python -m bench.budget [--size 256] [--batch 4] [--steps 5] [--threads 2]

The unsupervised methods that pass 0.95 frame AUC on UCSD Ped2 without
pretrained detectors predict whole frames with a U-Net (Park et al. 2020, MNAD,
from scratch; Liu et al. 2018 with a pretrained flow network in its loss). This times one training step (forward, backward, Adam) of a
U-Net of that size: four RGB frames in, one frame out, 64-128-256-512 channels,
two 3 x 3 convolutions with batch norm per level, at ``--size`` pixels square,
and multiplies by the schedule of MNAD's public training script (batch 4, 60
epochs at 256 x 256) on Ped2's 2,550 training frames. It measures the cost of
the network only, not its accuracy; the memory module and the data loading are
left out, so the figure is a lower bound.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from bench.speed import stats

PED2_TRAIN_FRAMES, PED2_TRAIN_CLIPS = 2550, 16
EPOCHS, INPUT_FRAMES = 60, 4


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class FramePredictor(nn.Module):
    """A U-Net: ``(B, 3 * INPUT_FRAMES, S, S)`` -> the next frame ``(B, 3, S, S)``."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        c = 3 * INPUT_FRAMES
        self.down = nn.ModuleList()
        for w in widths:
            self.down.append(_block(c, w))
            c = w
        self.up = nn.ModuleList(nn.ConvTranspose2d(w, w // 2, 2, stride=2) for w in widths[:0:-1])
        self.merge = nn.ModuleList(_block(w, w // 2) for w in widths[:0:-1])
        self.out = nn.Sequential(nn.Conv2d(widths[0], 3, 3, padding=1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.out(x)


def step_seconds(size: int, batch: int, steps: int) -> list[float]:
    """Seconds of each of ``steps`` training steps, after one untimed warm-up step."""
    torch.manual_seed(0)
    model = FramePredictor()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x, y = torch.rand(batch, 3 * INPUT_FRAMES, size, size), torch.rand(batch, 3, size, size)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    times = step_seconds(a.size, a.batch, a.steps)
    s = stats(times)
    per_step = s["median"]
    samples = PED2_TRAIN_FRAMES - PED2_TRAIN_CLIPS * INPUT_FRAMES
    steps_per_epoch = -(-samples // a.batch)
    total = per_step * steps_per_epoch * EPOCHS
    print(f"U-Net frame predictor, {a.size} x {a.size}, batch {a.batch}, {a.threads} threads")
    print(f"one training step: median {per_step:.2f} s over {s['runs']} (min {s['min']:.2f}, max {s['max']:.2f})")
    print(f"one Ped2 epoch ({steps_per_epoch} steps): {per_step * steps_per_epoch / 60:.0f} min")
    print(f"{EPOCHS} epochs: {total / 3600:.1f} h, {total / 1800:.0f} times the 30-minute training budget")


if __name__ == "__main__":
    main()
