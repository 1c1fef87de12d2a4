"""The novelty stream: k-centre bank, segments, distances, and how a detector calibrates and scores with it."""

import numpy as np
import pytest
import torch

from cuboid_ad.core.workdir import WorkDir
from cuboid_ad.cuboids.store import load_region
from cuboid_ad.ensemble.detector import RegionDetector
from cuboid_ad.ensemble.fusion import ScoreChain
from cuboid_ad.ensemble.streams.novelty import SEGMENT_FRAMES, build_bank, frame_codes, k_centres, nearest_distance, novelty_map, segment_ids


def test_k_centres_cover_every_point_better_than_a_random_subset():
    rng = np.random.default_rng(0)
    # a dense cluster and a few rare points far away: a random subset misses the rare ones
    x = np.concatenate([rng.normal(0, 0.1, (2000, 3)), rng.normal(5, 0.1, (10, 3))]).astype(np.float32)
    idx = k_centres(x, 20)
    assert len(set(idx.tolist())) == 20
    radius = nearest_distance(torch.from_numpy(x), torch.from_numpy(x[idx])).max()
    rand = nearest_distance(torch.from_numpy(x), torch.from_numpy(x[rng.choice(len(x), 20, replace=False)])).max()
    assert (idx >= 2000).any(), "the rare normal points are represented"
    assert radius < 0.5 * rand


def test_k_centres_stop_once_every_distinct_row_is_chosen():
    x = np.repeat(np.eye(3, dtype=np.float32), 50, axis=0)
    assert sorted(x[k_centres(x, 10)].argmax(axis=1).tolist()) == [0, 1, 2]


def test_nearest_distance_is_the_brute_force_minimum():
    rng = np.random.default_rng(1)
    q, b = rng.normal(size=(2, 7, 5, 4)).astype(np.float32), rng.normal(size=(30, 4)).astype(np.float32)
    want = np.sqrt(((q[..., None, :] - b) ** 2).sum(-1)).min(-1)
    assert np.allclose(nearest_distance(torch.from_numpy(q), torch.from_numpy(b)).numpy(), want, atol=1e-5)


def test_novelty_map_spreads_each_location_over_its_pixels():
    code = torch.zeros(1, 2, 3, 2, 2)
    code[0, :, 1, 0, 1] = 1.0  # one location of frame 1 is (1, 1), the bank holds only (0, 0)
    m = novelty_map(code, torch.zeros(1, 2), patch=8)
    assert m.shape == (1, 3, 8, 8)
    assert torch.allclose(m[0, 1, :4, 4:], torch.full((4, 4), 2**0.5)) and float(m.sum()) == pytest.approx(16 * 2**0.5)


def test_segments_are_clips_or_equal_stretches_of_long_ones():
    segs = segment_ids([120, 2 * SEGMENT_FRAMES + 100, 5])
    assert [np.unique(s).tolist() for s in segs] == [[0], [1, 2, 3], [4]]
    counts = np.bincount(segs[1])[1:]
    assert counts.max() - counts.min() <= 1 and counts.max() <= SEGMENT_FRAMES


def test_frame_codes_give_every_frame_the_code_of_the_window_that_covers_it():
    tube = np.arange(23, dtype=np.uint8)[:, None, None, None].repeat(4, axis=2).repeat(4, axis=3)  # (23, 1, 4, 4)

    def encode(w):  # a code that is the window's frame numbers: (B, 1, T, 1, 1)
        return torch.from_numpy(w[:, :, 0, :1, :1].astype(np.float32)).unsqueeze(1)

    codes = frame_codes(encode, tube, 5, with_previous=False)
    assert codes.shape == (23, 1, 1)
    assert codes[:, 0, 0].tolist() == list(range(23)), "windows tile the clip, the last one aligned to its end"
    assert frame_codes(encode, tube[:3], 5, False)[:, 0, 0].tolist() == [0, 1, 2], "a clip shorter than a window"


def test_build_bank_keeps_segment_labels_and_its_size():
    rng = np.random.default_rng(2)
    codes = [rng.normal(size=(40, 4, 3)).astype(np.float32), rng.normal(3, 1, size=(30, 4, 3)).astype(np.float32)]
    bank, seg = build_bank(codes, segment_ids([40, 30]), 25, seed=0)
    assert bank.shape == (25, 3) and set(seg.tolist()) == {0, 1}
    for b, s in zip(bank, seg):  # every kept code is one of its segment's own codes
        assert (np.abs(codes[s].reshape(-1, 3) - b).sum(axis=1) < 1e-6).any()


def test_fusion_weighs_the_streams_and_leaves_out_those_of_weight_zero():
    class Fixed:  # a stream whose chain returns fixed cell and region z
        def __init__(self, name, cells, region):
            self.name, self.maps, self.cells, self.region = name, ("m",), np.array(cells), np.array(region)

        def chain(self, stats, cfg):
            return lambda cells: (self.cells, self.region)

    a, b, c = Fixed("a", [1.0, 4.0], 4.0), Fixed("b", [3.0, 0.0], 3.0), Fixed("c", [np.inf, 0.0], np.inf)
    cells = np.zeros((1, 4, 2))
    cell_z, region, streams = ScoreChain([(a, 0.5), (b, 0.5), (c, 0.0)], [None] * 3, None)(cells)
    assert cell_z.tolist() == [2.0, 2.0] and region == 3.5, "weights 0.5 and 0.5: the mean"
    assert streams.tolist() == [4.0, 3.0, np.inf], "every stream's z is kept, weight 0 too"
    cell_z, region, _ = ScoreChain([(a, 1.0)], [None], None)(cells)
    assert cell_z.tolist() == [1.0, 4.0] and region == 4.0


def test_a_detector_measures_normal_segments_without_their_own_codes(trained_work, tiny_cfg, monkeypatch):
    wd = WorkDir(trained_work)
    det = RegionDetector.load(wd.models / "r1c2.pt", tiny_cfg)
    assert 16 <= len(det.fitted_["novelty"].reference) <= tiny_cfg.score.code_bank
    tubes, _, _ = load_region(wd.cuboids, "r1c2", tiny_cfg)
    banks = []
    original = RegionDetector._cell_maps

    def spy(self, tube, references=None):
        bank = None if references is None else references["novelty"]
        banks.append(None if bank is None else bank.numpy().copy())
        return original(self, tube, references)

    monkeypatch.setattr(RegionDetector, "_cell_maps", spy)
    again = det.recalibrated(tiny_cfg, tubes)
    # one pass per segment (every tiny clip is one), then again with flow noise (score.flow_jitter_px)
    assert len(banks) == 2 * len(tubes)
    full = again.fitted_["novelty"].reference
    for b in banks:
        assert b is not None and len(b) < len(full), "each segment's own codes are left out of its bank"
    assert np.allclose(full, det.fitted_["novelty"].reference), "the bank is the same from the same video and seed"


def test_unseen_motion_is_more_novel_than_normal_motion(trained_work, tiny_cfg):
    wd = WorkDir(trained_work)
    det = RegionDetector.load(wd.models / "r1c1.pt", tiny_cfg)  # a region where the training clips move
    tubes, _, _ = load_region(wd.cuboids, "r1c1", tiny_cfg)
    normal = tubes[0].tube[:8][None]
    fast = normal.copy()
    fast[..., 4:12, 4:12] = np.where(np.arange(8)[:, None, None, None] % 2 == 0, 250, 5).astype(np.uint8)  # violent flicker of flow codes
    maps_n, maps_f = det.window_maps(normal), det.window_maps(fast)
    k = det.layout["novelty"].start
    assert maps_f[:, :, k].mean() > 3 * maps_n[:, :, k].mean()


def test_novelty_off_scores_the_reconstruction_stream_alone(trained_work, tiny_cfg):
    wd = WorkDir(trained_work)
    cfg = tiny_cfg.with_overrides(score={"streams": {"reconstruction": 1.0}})
    det = RegionDetector.load(wd.models / "r1c1.pt", tiny_cfg)
    tubes, _, _ = load_region(wd.cuboids, "r1c1", tiny_cfg)
    off = det.recalibrated(cfg, tubes)
    assert list(off.fitted_) == ["reconstruction"] and off.n_maps == 4  # the shown reconstruction, error, energy, reach
    cell_z, region, streams = det._chain(det._cell_maps(tubes[0].tube))
    assert streams.shape == (len(region), 2) and not np.isnan(streams).any() and streams[:, 1].std() > 0
    assert np.allclose(off.decision_function(tubes[0].tube), streams[:, 0], atol=1e-5), "the reconstruction stream does not depend on the weight"
    assert np.allclose(off.cell_scores(tubes[0].tube).max(axis=1), streams[:, 0], atol=1e-5)
    assert np.allclose(region, 0.5 * (streams[:, 0] + streams[:, 1]), atol=1e-5), "a region's score weighs its streams' z"
    assert np.allclose(det.decision_function(tubes[0].tube), region, atol=1e-5)


@pytest.mark.parametrize("architecture, filters, bottleneck", [("conv3d", (4, 6), 2), ("conv3d", (4, 6), 0), ("convlstm", (4, 6), 3)])
def test_encode_features_gives_the_wider_features_and_the_code_the_decoder_rebuilds_from(architecture, filters, bottleneck):
    from cuboid_ad.ensemble.model import build_autoencoder

    torch.manual_seed(0)
    model = build_autoencoder(architecture, 2, filters, bottleneck).eval()
    x = torch.rand(3, 2, 5, 16, 16)
    features, code = model.encode_features(x)
    assert features.shape == (3, filters[-1], 5, 4, 4) and code.shape[2:] == (5, 4, 4)
    assert torch.equal(code, model.encode(x)) and torch.allclose(model.decode(code), model(x))
    if architecture == "conv3d" and not bottleneck:
        assert torch.equal(features, code), "without a bottleneck the features are the code"
    else:
        assert code.shape[1] == (bottleneck or filters[-1]) and not torch.equal(features[:, : code.shape[1]], code)


def test_novelty_on_the_encoders_features_keeps_a_bank_of_their_width(trained_work, tiny_cfg):
    wd = WorkDir(trained_work)
    det = RegionDetector.load(wd.models / "r1c1.pt", tiny_cfg)
    tubes, _, _ = load_region(wd.cuboids, "r1c1", tiny_cfg)
    wide = det.recalibrated(tiny_cfg.with_overrides(score={"novelty_features": "features"}), tubes)
    assert det.fitted_["novelty"].reference.shape[1] == tiny_cfg.model.bottleneck_channels
    assert wide.fitted_["novelty"].reference.shape[1] == tiny_cfg.model.filters[-1]
    normal = tubes[0].tube[:8][None]
    fast = normal.copy()
    fast[..., 4:12, 4:12] = np.where(np.arange(8)[:, None, None, None] % 2 == 0, 250, 5).astype(np.uint8)
    k = wide.layout["novelty"].start
    assert wide.window_maps(fast)[:, :, k].mean() > 3 * wide.window_maps(normal)[:, :, k].mean()
    others = [i for i in range(det.n_maps) if i != k]
    same = [det.window_maps(normal)[:, :, i] for i in others], [wide.window_maps(normal)[:, :, i] for i in others]
    assert all(np.array_equal(a, b) for a, b in zip(*same)), "error, reconstruction and energy do not depend on what novelty measures"
