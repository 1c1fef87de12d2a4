"""Small array helpers shared by the floors above."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of True in a 1-D ``mask``, in order."""
    padded = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` with reflected borders."""
    if sigma <= 0:
        return x
    k = gaussian_kernel1d(sigma).to(x)
    r = len(k) // 2
    N, C, H, W = x.shape
    y = x.reshape(N * C, 1, H, W)
    y = F.pad(y, (r, r, r, r), mode="reflect" if min(H, W) > r else "replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.conv2d(y, k.view(1, 1, -1, 1))
    return y.reshape(N, C, H, W)
