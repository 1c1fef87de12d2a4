import torch

from cuboid_ad.ensemble.model import SpatioTemporalAutoencoder


def test_paper_preset_layers_follow_the_reference():
    m = SpatioTemporalAutoencoder(1, (64, 128), 0)
    convs = [l for l in m.modules() if isinstance(l, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    assert [(type(l).__name__, l.out_channels, l.stride) for l in convs] == [
        ("Conv3d", 64, (1, 2, 2)),
        ("Conv3d", 128, (1, 2, 2)),
        ("ConvTranspose3d", 128, (1, 2, 2)),
        ("ConvTranspose3d", 64, (1, 2, 2)),
        ("ConvTranspose3d", 1, (1, 1, 1)),
    ]
    assert all(l.kernel_size == (3, 3, 3) for l in convs)


def test_output_matches_input_shape_and_range():
    for channels, filters, bottleneck in [(1, (8, 16), 4), (3, (8,), 0), (2, (4, 8, 16), 2)]:
        m = SpatioTemporalAutoencoder(channels, filters, bottleneck)
        x = torch.rand(2, channels, 10, 32, 32)
        y = m(x)
        assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
