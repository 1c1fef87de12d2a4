"""The supervised route's network: a 3D CNN with spatial attention. A pure ``nn.Module``.

For users with labelled incidents. A window of T whole frames goes through
3x3x3 convolutions (batch norm, ReLU): the first with stride 2 in space, each
of the others followed by a 2x2x2 max pooling. A spatial attention block then scores every location
of the last feature map with a small convolution and a sigmoid; the features
are weighted by that map and pooled with it (a weighted mean over the
locations), and a linear head gives one logit per class. The map is returned
with the logits: it shows *where* the classifier looked.
"""

from __future__ import annotations

import torch
from torch import nn


class SpatialAttention(nn.Module):
    """A learned weight in (0, 1) for every location of a feature map, shared by all channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.score = nn.Sequential(
            nn.Conv3d(channels, max(channels // 4, 1), kernel_size=1), nn.ReLU(inplace=True), nn.Conv3d(max(channels // 4, 1), 1, kernel_size=1)
        )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, C, T, H, W) -> (attention-pooled features (B, C), map (B, H, W) averaged over time)."""
        a = torch.sigmoid(self.score(features))  # (B, 1, T, H, W)
        pooled = (features * a).sum(dim=(2, 3, 4)) / a.sum(dim=(2, 3, 4)).clamp_min(1e-6)
        return pooled, a.mean(dim=2)[:, 0]


class AttentionClassifier3D(nn.Module):
    def __init__(self, in_channels: int, filters: tuple[int, ...], n_classes: int, dropout: float = 0.3):
        """Widths from the config (``supervise.filters``); ``n_classes`` >= 2."""
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, f in enumerate(filters):
            # the first layer works at half the frame's resolution (stride), the others pool space and time after it
            layers += [nn.Conv3d(c, f, kernel_size=3, stride=(1, 2, 2) if i == 0 else 1, padding=1, bias=False), nn.BatchNorm3d(f), nn.ReLU(inplace=True)]
            if i > 0:
                layers.append(nn.MaxPool3d(2, ceil_mode=True))
            c = f
        self.features = nn.Sequential(*layers)
        self.attention = SpatialAttention(c)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c, n_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, T, H, W) in [0, 1] -> (logits (B, n_classes), attention map (B, H', W') in (0, 1))."""
        pooled, amap = self.attention(self.features(x))
        return self.head(pooled), amap
