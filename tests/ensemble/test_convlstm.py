"""The ConvLSTM cell and the ConvLSTM autoencoder (Chong & Tay 2017) of the `convlstm` preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cuboid_ad.core.labels import frame_labels, load_labels
from cuboid_ad.ensemble.metrics import regularity
from cuboid_ad.ensemble.model import ConvLSTM, ConvLSTMAutoencoder, ConvLSTMCell


def test_the_cell_keeps_height_and_width_and_starts_from_zero():
    cell = ConvLSTMCell(3, 5)
    x = torch.rand(2, 3, 8, 6)
    h, c = cell(x)
    assert h.shape == c.shape == (2, 5, 8, 6)
    zeros = torch.zeros(2, 5, 8, 6)
    h0, c0 = cell(x, (zeros, zeros))
    assert torch.equal(h, h0) and torch.equal(c, c0)
    assert h.abs().max() < 1  # o * tanh(c)


def test_the_cell_carries_state_through_time():
    layer = ConvLSTM(1, 4)
    x = torch.zeros(1, 1, 5, 6, 6)
    x[:, :, 0] = 1.0  # only the first frame has input
    out = layer(x)
    assert out.shape == (1, 4, 5, 6, 6)
    # later steps differ from a sequence that never saw the first frame: the memory carried it
    assert not torch.allclose(out[:, :, 4], layer(torch.zeros_like(x))[:, :, 4])


def test_gradients_match_finite_differences():
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 3).double()
    x = torch.rand(1, 2, 4, 4, dtype=torch.double, requires_grad=True)
    h = torch.rand(1, 3, 4, 4, dtype=torch.double, requires_grad=True)
    c = torch.rand(1, 3, 4, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, h, c: cell(x, (h, c)), (x, h, c))


def test_the_autoencoder_reconstructs_the_input_shape():
    m = ConvLSTMAutoencoder(2, (8, 4), 2)
    x = torch.rand(3, 2, 10, 32, 32)
    y = m(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1


def _moving_squares(n: int, generator: torch.Generator) -> torch.Tensor:
    """n clips of 8 frames, 16x16: a 4x4 bright square moving one pixel a frame, from a random start and direction."""
    clips = torch.zeros(n, 1, 8, 16, 16)
    for k in range(n):
        r, c = (int(v) for v in torch.randint(2, 10, (2,), generator=generator))
        dr, dc = (int(v) for v in torch.randint(-1, 2, (2,), generator=generator))
        for t in range(8):
            rr, cc = r + dr * t // 2, c + dc * t // 2
            clips[k, 0, t, rr : rr + 4, cc : cc + 4] = 1.0
    return clips


def test_it_learns_to_reproduce_a_moving_square():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    m = ConvLSTMAutoencoder(1, (8, 8), 4)
    opt = torch.optim.Adam(m.parameters(), lr=0.01)  # 300 steps of 16 clips: about 8 s on one core
    test = _moving_squares(8, torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = float(((m(test) - test) ** 2).mean())
    for _ in range(300):
        x = _moving_squares(16, g)
        loss = ((m(x) - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(((m(test) - test) ** 2).mean())
        # the squares are 1/16 of the frame: predicting black everywhere scores 0.0625, a blur of the
        # squares' mean position about 0.055 (where the model stalled without layer normalisation)
        assert after < 0.1 * 0.0625, (before, after)


def test_the_convlstm_preset_trains_and_scores_through_the_same_chain(tmp_path, tiny_data, tiny_cfg):
    """Tubes of pixels, one ConvLSTM autoencoder a region, the manifest, then `evaluate` finds the injected object."""
    from cuboid_ad.core.workdir import WorkDir
    from cuboid_ad.ensemble.detector import read_checkpoint
    from cuboid_ad.pipeline.stages.evaluate import evaluate
    from cuboid_ad.pipeline.stages.extract import extract_folder
    from cuboid_ad.pipeline.stages.slice import slice_folder
    from cuboid_ad.pipeline.stages.train import train_ensemble

    cfg = tiny_cfg.with_overrides(model={"input": "frames", "architecture": "convlstm", "filters": (8, 8), "bottleneck_channels": 4})
    wd = WorkDir(tmp_path)
    extract_folder(tiny_data / "train", wd.frames, cfg)
    slice_folder(wd.frames, wd.cuboids, cfg)
    train_ensemble(wd.cuboids, wd.models, cfg, n_jobs=2, threads=1)
    state = read_checkpoint(wd.models / "r0c0.pt")["state_dict"]
    assert any(k.startswith("temporal.0.cell.gates") for k in state)  # the ConvLSTM, not 3D convolutions
    metrics = evaluate(tiny_data / "test", tiny_data / "labels.json", wd.models, tmp_path / "eval", cfg)
    assert metrics["auc_pooled_raw"] > 0.8, metrics["auc_pooled_raw"]
    # the paper's regularity score, beside the clip's scores: its AUC is the per-clip min-max one
    rows = np.loadtxt(tmp_path / "eval" / "01" / "regularity.csv", delimiter=",", skiprows=1)
    y = frame_labels(*load_labels(tiny_data / "labels.json")["01"])
    assert rows[:, 1].min() == 0 and rows[:, 1].max() == 1 and len(rows) == len(y)
    assert roc_auc_score(y, 1 - rows[:, 1]) == pytest.approx(metrics["auc_pooled_minmax_per_clip"], abs=1e-3)


def test_regularity_is_one_for_the_most_regular_frame_and_zero_for_the_least():
    assert regularity(np.array([2.0, 4.0, 6.0])).tolist() == [1.0, 0.5, 0.0]
    assert regularity(np.array([-3.0, 1.0])).tolist() == [1.0, 0.0]  # z-scores can be negative
    assert regularity(np.array([5.0, 5.0])).tolist() == [1.0, 1.0]
