"""The spatio-temporal autoencoder of one region: a pure ``nn.Module``, no I/O, no thresholds.

Encoder: 3x3x3 convolutions, each with stride (1, 2, 2) (time kept, height
and width halved) and ReLU; widths from ``filters``. An optional 1x1x1
bottleneck squeezes the code to ``bottleneck_channels``. Decoder: the mirror
image with transposed convolutions, then a stride-1 transposed convolution back
to the input's channels and a sigmoid, since inputs are scaled to [0, 1].

The ``paper`` preset is filters (64, 128) with no bottleneck: encoder 64 then
128 filters, decoder 128 then 64, output to the input's channels.

The ``convlstm`` preset (``model.architecture = "convlstm"``) is
:class:`ConvLSTMAutoencoder`, Chong & Tay's spatio-temporal autoencoder
(ISNN 2017): 2D convolutions on each frame around a temporal encoder-decoder
of ConvLSTM layers. PyTorch has no ConvLSTM layer; :class:`ConvLSTMCell` is one.
"""

from __future__ import annotations

import torch
from torch import nn


def build_autoencoder(architecture: str, in_channels: int, filters: tuple[int, ...], bottleneck_channels: int) -> nn.Module:
    """The autoencoder ``model.architecture`` names: ``conv3d`` or ``convlstm``."""
    if architecture == "convlstm":
        return ConvLSTMAutoencoder(in_channels, filters, bottleneck_channels)
    return SpatioTemporalAutoencoder(in_channels, filters, bottleneck_channels)


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
        self.n_feature_layers = 2 * len(filters)  # the convolutions (and ReLUs) before the bottleneck
        layers = []
        for f in reversed(filters):
            layers += [
                nn.ConvTranspose3d(c, f, kernel_size=3, stride=(1, 2, 2), padding=1, output_padding=(0, 1, 1)),
                nn.ReLU(inplace=True),
            ]
            c = f
        layers += [nn.ConvTranspose3d(c, in_channels, kernel_size=3, stride=1, padding=1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T, P, P) in [0, 1] -> the code (B, D, T, P', P'), D the code's width."""
        return self.encoder(x)

    def encode_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (the last convolution's output before the bottleneck (B, filters[-1], T, P', P'), the code);
        without a bottleneck the two are the same."""
        features = self.encoder[: self.n_feature_layers](x)
        return features, self.encoder[self.n_feature_layers :](features)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T, P, P) in [0, 1] -> reconstruction of the same shape."""
        return self.decode(self.encode(x))


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell (Shi et al., NeurIPS 2015, without peepholes).

    The four gates are one convolution of the input and the hidden state,
    concatenated: i, f, o = sigmoid(.), g = tanh(.); c' = f * c + i * g;
    h' = o * tanh(c'). Height and width are kept (``same`` padding).
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.gates = nn.Conv2d(in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W); state: (h, c), each (B, hidden, H, W), zeros when None. Returns the new (h, c)."""
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = torch.chunk(self.gates(torch.cat([x, h], dim=1)), 4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class ConvLSTM(nn.Module):
    """A :class:`ConvLSTMCell` run over time from a zero state: (B, C, T, H, W) -> every step's h, (B, hidden, T, H, W)."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3):
        super().__init__()
        self.cell = ConvLSTMCell(in_channels, hidden_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state, out = None, []
        for t in range(x.shape[2]):
            state = self.cell(x[:, :, t], state)
            out.append(state[0])
        return torch.stack(out, dim=2)


class FrameNorm(nn.Module):
    """Layer normalisation of every frame of a (B, C, T, H, W) tensor, over its channels, height and width."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        return self.norm(x.transpose(1, 2).reshape(B * T, C, H, W)).reshape(B, T, C, H, W).transpose(1, 2)


class ConvLSTMAutoencoder(nn.Module):
    """The spatio-temporal autoencoder of Chong & Tay (ISNN 2017), scaled to a region's patch.

    A spatial encoder (2D convolutions applied to every frame, each 3x3 with
    stride 2: height and width halved; widths ``filters``), a temporal
    encoder-decoder of three ConvLSTM layers (widths ``filters[-1]``,
    ``bottleneck_channels``, ``filters[-1]``, as the paper's 64, 32, 64), and a
    spatial decoder of transposed 2D convolutions back to the input, with a
    sigmoid. The paper's 11x11 stride-4 and 5x5 stride-2 convolutions on
    227x227 frames become 3x3 stride-2 ones on P x P patches. Every layer but
    the last is layer-normalised, as common implementations of the paper do:
    without it the gates' products shrink the signal so much that three
    stacked ConvLSTMs pass almost nothing of the input at first, and training
    stalls (tests/ensemble/test_convlstm.py).
    """

    def __init__(self, in_channels: int, filters: tuple[int, ...], bottleneck_channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for f in filters:
            layers += [nn.Conv2d(c, f, kernel_size=3, stride=2, padding=1), nn.GroupNorm(1, f), nn.ReLU(inplace=True)]
            c = f
        self.spatial_encoder = nn.Sequential(*layers)
        middle = bottleneck_channels or c
        self.temporal = nn.Sequential(
            ConvLSTM(c, c), FrameNorm(c), ConvLSTM(c, middle), FrameNorm(middle), ConvLSTM(middle, c), FrameNorm(c)
        )
        layers = []
        for f in reversed(filters[:-1]):
            layers += [
                nn.ConvTranspose2d(c, f, kernel_size=3, stride=2, padding=1, output_padding=1),
                nn.GroupNorm(1, f),
                nn.ReLU(inplace=True),
            ]
            c = f
        layers += [nn.ConvTranspose2d(c, in_channels, kernel_size=3, stride=2, padding=1, output_padding=1), nn.Sigmoid()]
        self.spatial_decoder = nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T, P, P) in [0, 1] -> the code (B, D, T, P', P'): the middle ConvLSTM's output."""
        return self.encode_features(x)[1]

    def encode_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (the spatial encoder's output of every frame (B, filters[-1], T, P', P'), the code)."""
        B, C, T, P, _ = x.shape
        features = self.spatial_encoder(x.transpose(1, 2).reshape(B * T, C, P, P))
        features = features.reshape(B, T, *features.shape[1:]).transpose(1, 2)
        return features, self.temporal[:4](features)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        B, _, T = code.shape[:3]
        code = self.temporal[4:](code)  # (B, C', T, P', P')
        out = self.spatial_decoder(code.transpose(1, 2).reshape(B * T, code.shape[1], *code.shape[3:]))
        return out.reshape(B, T, *out.shape[1:]).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, T, P, P) in [0, 1] -> reconstruction of the same shape."""
        return self.decode(self.encode(x))
