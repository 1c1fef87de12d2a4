"""The supervised classifier's parts: network, SSIM selection, split, weights, augmentation, streaming, resumable fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cuboid_ad.core.config import SuperviseConfig
from cuboid_ad.ensemble.classifier import AttentionClassifier3D
from cuboid_ad.ensemble.fit import TrainingStopped
from cuboid_ad.ensemble.fusion import fuse_classifier
from cuboid_ad.ensemble.metrics import classification_metrics
from cuboid_ad.ensemble.supervised import (
    ClassifierStream,
    LabelledClip,
    augment,
    build_classifier,
    class_weights,
    fit_classifier,
    select_windows,
    split_clips,
    ssim,
    window_stack,
)


def test_the_network_gives_logits_and_an_attention_map_in_0_1():
    net = AttentionClassifier3D(1, (4, 8, 8), 3).eval()
    logits, amap = net(torch.rand(2, 1, 8, 32, 48))
    assert logits.shape == (2, 3)
    assert amap.shape == (2, 4, 6)  # stride 2, then two 2x2x2 poolings: 32x48 -> 16x24 -> 8x12 -> 4x6
    assert amap.min() > 0 and amap.max() < 1


def test_the_attention_map_weighs_the_features_it_pools():
    net = AttentionClassifier3D(1, (4,), 2).eval()
    f = torch.rand(1, 4, 2, 3, 3)
    pooled, amap = net.attention(f)
    a = torch.sigmoid(net.attention.score(f))
    assert torch.allclose(pooled, (f * a).sum((2, 3, 4)) / a.sum((2, 3, 4)))
    assert torch.allclose(amap, a.mean(2)[:, 0])


def test_ssim_is_1_for_the_same_picture_and_falls_with_the_difference():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 1, 24, 24), dtype=np.uint8)

    def noisy(sigma):
        return np.clip(a.astype(int) + rng.normal(0, sigma, a.shape), 0, 255).astype(np.uint8)

    assert np.allclose(ssim(a, a), 1.0)
    s10, s60 = ssim(a, noisy(10)), ssim(a, noisy(60))
    assert (s60 < s10).all() and (s10 < 1).all()
    b = noisy(30)
    assert np.allclose(ssim(a, b), ssim(b, a))
    # two flat pictures: only the luminance term is left, (2 mx my + c1) / (mx^2 + my^2 + c1)
    c1 = (0.01 * 255) ** 2
    flat = ssim(np.full((1, 1, 16, 16), 100, np.uint8), np.full((1, 1, 16, 16), 150, np.uint8))
    assert flat[0] == pytest.approx((2 * 100 * 150 + c1) / (100**2 + 150**2 + c1))


def test_near_duplicate_windows_are_skipped_but_class_changes_are_kept():
    frames = np.full((40, 1, 16, 16), 100, np.uint8)
    frames[20:, :, 4:12, 4:12] = 250  # the picture changes once, at frame 20
    labels = np.zeros(40, np.int64)
    labels[30:] = 1  # and the class at frame 30, with the same picture
    clip = LabelledClip("c", frames, labels)
    assert select_windows(clip, 4, 2, 1.0).tolist() == list(range(3, 40, 2))  # 1: keep all
    assert select_windows(clip, 4, 2, 0.95).tolist() == [3, 21, 31]


def test_windows_end_at_their_frame_and_repeat_the_first_before_the_start():
    frames = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1)
    w = window_stack(frames, np.array([1, 5]), 3)
    assert w.shape == (2, 1, 3, 1, 1)
    assert w[0, 0, :, 0, 0].tolist() == [0, 0, 1]
    assert w[1, 0, :, 0, 0].tolist() == [3, 4, 5]


def test_validation_takes_whole_clips_from_every_kind():
    clips = [LabelledClip(f"n{i}", np.zeros((10, 1, 4, 4), np.uint8), np.zeros(10, np.int64)) for i in range(4)]
    clips += [LabelledClip(f"a{i}", np.zeros((10, 1, 4, 4), np.uint8), np.r_[np.zeros(5), np.ones(5)].astype(np.int64)) for i in range(4)]
    clips.append(LabelledClip("lone", np.zeros((10, 1, 4, 4), np.uint8), np.full(10, 2)))
    train, val = split_clips(clips, 0.25, seed=0)
    assert sorted(train + val) == list(range(9)) and not set(train) & set(val)
    assert sum(i < 4 for i in val) == 1 and sum(4 <= i < 8 for i in val) == 1
    assert 8 in train  # a kind with one clip stays in training
    assert split_clips(clips, 0.25, seed=0) == (train, val)


def test_class_weights_make_every_class_count_the_same():
    y = np.array([0] * 90 + [1] * 10)
    w = class_weights(y, 3)
    assert w[2] == 0
    assert np.isclose(w[0] * 90, w[1] * 10)
    assert np.isclose(w[:2].mean(), (100 / 2) / 90 * 0.5 + (100 / 2) / 10 * 0.5)


def test_augmentation_keeps_shape_and_range_and_is_drawn_from_the_generator():
    x = torch.rand(4, 1, 5, 16, 24)
    a = augment(x, np.random.default_rng(1))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, augment(x, np.random.default_rng(1)))
    assert not torch.equal(a, augment(x, np.random.default_rng(2)))
    # flips only when asked, drawn from the same generator (the other draws do not move)
    f = augment(x, np.random.default_rng(1), flip=True)
    same = [torch.equal(f[i], a[i]) for i in range(4)]
    assert not all(same) and any(same)


def test_the_stream_fed_in_chunks_equals_the_stream_fed_at_once():
    torch.manual_seed(0)
    net = AttentionClassifier3D(1, (4, 8), 2)
    frames = np.random.default_rng(0).integers(0, 256, (23, 20, 30, 1), dtype=np.uint8)
    whole = ClassifierStream(net, 5, (16, 24)).push(frames)
    s = ClassifierStream(net, 5, (16, 24))
    parts = [s.push(frames[a:b]) for a, b in ((0, 3), (3, 4), (4, 23))]
    for k in range(2):
        assert np.allclose(whole[k], np.concatenate([p[k] for p in parts]), atol=1e-6)
    # causal: a frame's probability does not change when later frames change
    later = frames.copy()
    later[15:] = 0
    assert np.allclose(ClassifierStream(net, 5, (16, 24)).push(later)[0][:15], whole[0][:15], atol=1e-6)


def moving_square_clips(n_clips: int, seed: int) -> list[LabelledClip]:
    """Class 1: a bright square moves; class 0: it stands still. Noise everywhere."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n_clips):
        k = i % 2
        frames = rng.integers(60, 90, (30, 1, 16, 24)).astype(np.uint8)
        for t in range(30):
            x = (2 + t) % 18 if k else 8
            frames[t, :, 6:10, x : x + 4] = 230
        clips.append(LabelledClip(f"c{i}", frames, np.full(30, k, np.int64)))
    return clips


def _fit(clips, cfg, **kw):
    model = build_classifier(cfg, 1, 2)
    tw = [(i, select_windows(c, cfg.window_frames, cfg.frames_between_windows, cfg.ssim_threshold)) for i, c in enumerate(clips[:6])]
    vw = [(i, np.arange(cfg.window_frames - 1, 30, 3)) for i in range(6, 8)]
    return model, fit_classifier(model, clips, tw, vw, 2, cfg, **kw)


CFG = SuperviseConfig(window_frames=4, frames_between_windows=2, filters=(4, 8), epochs=4, batch_size=8, learning_rate=3e-3, patience=10)


def test_a_run_resumed_after_a_stop_ends_where_an_uninterrupted_one_does():
    clips = moving_square_clips(8, seed=0)
    _, (best, state) = _fit(clips, CFG)
    snaps = []
    with pytest.raises(TrainingStopped):
        _fit(clips, CFG, on_epoch=lambda s, snap: snaps.append(snap), should_stop=lambda: len(snaps) == 2)
    _, (best2, state2) = _fit(clips, CFG, resume=snaps[-1])
    assert state2.val_loss == state.val_loss and state2.best_epoch == state.best_epoch
    assert all(torch.equal(best[k], best2[k]) for k in best)


def test_it_learns_to_tell_motion_from_stillness():
    clips = moving_square_clips(8, seed=1)
    cfg = SuperviseConfig(window_frames=4, frames_between_windows=1, filters=(8, 16), epochs=15, batch_size=8, learning_rate=3e-3, patience=15)
    model, (best, state) = _fit(clips, cfg)
    model.load_state_dict(best)
    test = moving_square_clips(4, seed=2)
    probs = np.concatenate([ClassifierStream(model, 4, (16, 24)).push(c.frames.transpose(0, 2, 3, 1))[0] for c in test])
    m = classification_metrics(np.concatenate([c.labels for c in test]), probs, ["still", "moving"])
    assert m["balanced_accuracy"] >= 0.9, m


def test_classification_metrics_on_known_predictions():
    truth = np.array([0, 0, 0, 1, 1, 2])
    probs = np.eye(3)[[0, 0, 1, 1, 1, 0]] * 0.8 + 0.2 / 3
    m = classification_metrics(truth, probs, ["normal", "a", "b"])
    assert m["confusion"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["per_class"]["a"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8), "support": 2}


def test_fusion_is_a_vote_in_units_of_the_threshold():
    s = np.array([0.0, 5.0, 9.9])
    assert fuse_classifier(s, np.array([0.5, 0.5, 0.5]), 5.0, 1.0).tolist() == s.tolist()
    assert fuse_classifier(s, np.array([1.0, 0.0, 0.0]), 5.0, 1.0).tolist() == [5.0, 0.0, 4.9]
    assert fuse_classifier(s, np.array([1.0, 0.0, 0.0]), 5.0, 0.0).tolist() == s.tolist()
