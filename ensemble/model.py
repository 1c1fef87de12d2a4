"""The spatio-temporal autoencoder of one region: a pure ``nn.Module``, no I/O, no thresholds.

Encoder: 3x3x3 convolutions, each with stride (1, 2, 2) (time kept, height
and width halved) and ReLU; widths from ``filters``. An optional 1x1x1
bottleneck squeezes the code to ``bottleneck_channels``. Decoder: the mirror
image with transposed convolutions, then a stride-1 transposed convolution back
to the input's channels and a sigmoid, since inputs are scaled to [0, 1].

The ``paper`` preset is filters (64, 128) with no bottleneck: encoder 64 then
128 filters, decoder 128 then 64, output to the input's channels.
"""

from __future__ import annotations

import torch
from torch import nn


class SpatioTemporalAutoencoder(nn.Module):
    def __init__(self, in_channels: int, filters: tuple[int, ...], bottleneck_channels: int):
        """Widths come from the config (``model.filters``, ``model.bottleneck_channels``): no defaults here."""
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for f in filters:
            layers += [nn.Conv3d(c, f, kernel_size=3, stride=(1, 2, 2), padding=1), nn.ReLU(inplace=True)]
            c = f
        if bottleneck_channels:
            layers += [nn.Conv3d(c, bottleneck_channels, kernel_size=1), nn.ReLU(inplace=True)]
            c = bottleneck_channels
        self.encoder = nn.Sequential(*layers)
        layers = []
        for f in reversed(filters):
            layers += [
                nn.ConvTranspose3d(c, f, kernel_size=3, stride=(1, 2, 2), padding=1, output_padding=(0, 1, 1)),
                nn.ReLU(inplace=True),
            ]
            c = f
        layers += [nn.ConvTranspose3d(c, in_channels, kernel_size=3, stride=1, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T, P, P) in [0, 1] -> reconstruction of the same shape."""
        return self.decoder(self.encoder(x))
