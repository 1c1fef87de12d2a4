import numpy as np
import pytest
import torch

from cuboid_ad.core.errors import ArtifactError
from cuboid_ad.core.tubes import RegionTube
from cuboid_ad.core.workdir import WorkDir
from cuboid_ad.cuboids.store import load_region
from cuboid_ad.ensemble.detector import RegionDetector, encode_windows
from cuboid_ad.ensemble.ensemble import Ensemble
from cuboid_ad.ensemble.fit import fit_autoencoder, split_windows, validation_masks
from cuboid_ad.ensemble.metrics import equal_error_rate, frame_metrics
from cuboid_ad.ensemble.model import SpatioTemporalAutoencoder


def test_validation_blocks_hold_out_the_requested_share():
    masks = validation_masks([1000, 430, 170], 50, 0.2)
    assert [len(m) for m in masks] == [1000, 430, 170]
    assert np.concatenate(masks).mean() == pytest.approx(0.2, abs=0.03)
    runs = np.diff(np.flatnonzero(np.diff(masks[0].astype(int))))
    assert (runs >= 50).all(), "held-out frames come in whole blocks"
    assert all(m.any() for m in masks), "held-out blocks are spread over the clips"
    tiny = validation_masks([40, 40], 20, 0.2)
    assert sum(m.sum() for m in tiny) == 20, "a small dataset still holds out one block"


def test_no_window_straddles_training_and_validation():
    (mask,) = validation_masks([200], 20, 0.2)
    starts = np.arange(0, 190, 2)
    train, val = split_windows(mask, starts, 10, with_previous=True)
    for s in train:
        assert not mask[max(0, s - 1) : s + 10].any()
    for s in val:
        assert mask[max(0, s - 1) : s + 10].all()
    assert len(train) and len(val)


def test_frame_difference_encoding():
    w = np.zeros((1, 3, 1, 2, 2), np.uint8)
    w[0, 1] = 255  # frame 1 jumps up, frame 2 back down
    x = encode_windows(w, "diff")
    assert x.shape == (1, 1, 2, 2, 2)
    assert x[0, 0, :, 0, 0].tolist() == [1.0, 0.0]
    assert encode_windows(w, "both").shape == (1, 2, 2, 2, 2)


def _toy(seed=0):
    rng = np.random.default_rng(seed)
    frames = (rng.random((120, 1, 8, 8)) * 50).astype(np.uint8)
    idx = np.arange(0, 110, 2)[:, None] + np.arange(4)[None]
    return frames, idx[:40], idx[45:]


def test_training_reduces_the_loss_and_resuming_matches_an_uninterrupted_run():
    from cuboid_ad.core.config import TrainConfig

    frames, tr, va = _toy()
    cfg = TrainConfig(epochs=4, batch_size=8, patience=10, learning_rate=0.01)
    enc = lambda w: encode_windows(w, "frames")  # noqa: E731

    torch.manual_seed(0)
    full, state = fit_autoencoder(SpatioTemporalAutoencoder(1, (4,), 2), frames, tr, va, enc, cfg, torch.device("cpu"))
    assert state.val_loss[-1] < state.val_loss[0] and len(state.train_loss) == 4

    snapshots = []
    torch.manual_seed(0)
    fit_autoencoder(SpatioTemporalAutoencoder(1, (4,), 2), frames, tr, va, enc, cfg.__class__(**{**cfg.__dict__, "epochs": 2}),
                    torch.device("cpu"), on_epoch=lambda s, snap: snapshots.append(snap))
    resumed, state2 = fit_autoencoder(SpatioTemporalAutoencoder(1, (4,), 2), frames, tr, va, enc, cfg, torch.device("cpu"), resume=snapshots[-1])
    assert state2.val_loss == pytest.approx(state.val_loss)
    for k in full:
        assert torch.allclose(full[k], resumed[k])


def test_an_epoch_draws_at_most_max_windows_per_epoch_and_validates_on_a_fixed_draw():
    from cuboid_ad.core.config import TrainConfig

    frames, tr, va = _toy()
    frames[:, 0, 0, 0] = np.arange(len(frames))  # every window named by its first frame
    calls = []

    def enc(w):
        calls.append(w[:, 0, 0, 0, 0].tolist())
        return encode_windows(w, "frames")

    cfg = TrainConfig(epochs=3, batch_size=32, patience=10, max_windows_per_epoch=6)
    fit_autoencoder(SpatioTemporalAutoencoder(1, (4,), 2), frames, tr, va, enc, cfg, torch.device("cpu"))
    assert len(tr) == 40 and len(va) == 10 and [len(c) for c in calls] == [6] * 6, "one batch of 6 to train and one to validate, each epoch"
    train_calls, val_calls = calls[0::2], calls[1::2]
    assert len({tuple(sorted(c)) for c in train_calls}) == 3, "a new draw of training windows every epoch"
    assert all(set(c) <= set(tr[:, 0].tolist()) for c in train_calls)
    assert val_calls[0] == val_calls[1] == val_calls[2], "validation measures the same windows every epoch"
    assert set(val_calls[0]) <= set(va[:, 0].tolist())


def test_checkpoint_round_trip_gives_the_same_errors(trained_work, tiny_cfg, tmp_path):
    wd = WorkDir(trained_work)
    det = RegionDetector.load(wd.models / "r0c0.pt", tiny_cfg)
    tubes, _, _ = load_region(wd.cuboids, "r0c0", tiny_cfg)
    windows = tubes[0].tube[np.arange(0, 40, 4)[:, None] + np.arange(8)]
    again = RegionDetector.load(det.save(tmp_path / "r0c0.pt", det.training_clips_))
    assert np.array_equal(det.window_maps(windows), again.window_maps(windows))
    assert again.fitted_["reconstruction"].stats.to_dict() == det.fitted_["reconstruction"].stats.to_dict() and np.array_equal(again.held_out_scores_, det.held_out_scores_)
    assert again.threshold_ == det.threshold_ and np.mean(det.held_out_scores_ > det.threshold_) <= tiny_cfg.score.false_alarm_rate
    tube = tubes[0].tube
    assert np.array_equal(det.decision_function(tube), again.decision_function(tube))
    assert np.array_equal(det.predict(tube), (det.decision_function(tube) > det.threshold_).astype(int))
    with pytest.raises(ArtifactError, match="model.filters"):
        RegionDetector.load(wd.models / "r0c0.pt", tiny_cfg.with_overrides(model={"filters": (4, 8)}))


def test_recalibration_returns_a_new_detector_with_the_same_weights(trained_work, tiny_cfg):
    wd = WorkDir(trained_work)
    tubes, _, _ = load_region(wd.cuboids, "r0c0", tiny_cfg)
    t = tiny_cfg.train
    n_held = sum(int(m.sum()) for m in validation_masks([len(x.tube) for x in tubes], t.val_block_frames, t.val_fraction))
    det = RegionDetector.load(wd.models / "r0c0.pt", tiny_cfg)
    assert len(det.held_out_scores_) == n_held, "the alarm threshold comes from the held-out blocks only"
    before = det.fitted_["reconstruction"].stats.to_dict()
    held = det.recalibrated(tiny_cfg.with_overrides(score={"calibrate_on": "held_out"}), tubes)
    assert held is not det and held.model_ is det.model_ and det.fitted_["reconstruction"].stats.to_dict() == before
    assert held.fitted_["reconstruction"].stats.to_dict() != before, "statistics from the held-out blocks differ from those of every frame"
    per_cell = det.recalibrated(tiny_cfg.with_overrides(score={"statistics": "cell"}), tubes)
    plain = det.recalibrated(tiny_cfg.with_overrides(score={"statistics": "cell", "explained_motion_max": 0.0}), tubes)
    assert (plain.fitted_["reconstruction"].stats.slope == 0).all() and (per_cell.fitted_["reconstruction"].stats.slope > 0).any() and (det.fitted_["reconstruction"].stats.slope == 0).all()
    assert len(set(det.fitted_["reconstruction"].stats.std)) == 1 and len(set(per_cell.fitted_["reconstruction"].stats.std)) > 1, "one scale per region, or one per cell"
    with pytest.raises(ArtifactError, match="train.epochs"):
        det.recalibrated(tiny_cfg.with_overrides(train={"epochs": 3}), tubes)


def test_foreign_and_truncated_checkpoints_are_refused(trained_work, tmp_path):
    import pickle

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps(RegionTube))  # a pickle that names a class: must not be unpickled
    with pytest.raises(ArtifactError, match="not a readable checkpoint"):
        RegionDetector.load(bad)
    cut = tmp_path / "cut.pt"
    cut.write_bytes((WorkDir(trained_work).models / "r0c0.pt").read_bytes()[:500])
    with pytest.raises(ArtifactError, match="not a readable checkpoint"):
        RegionDetector.load(cut)


def test_ensemble_manifest_lists_every_region_with_its_threshold(trained_work, tiny_cfg):
    ens = Ensemble.load(WorkDir(trained_work).models, tiny_cfg)
    assert ens.region_ids == tiny_cfg.cuboids.region_ids and ens.frame_size == (64, 96)
    assert [r["threshold"] for r in ens.manifest["regions"]] == pytest.approx([d.threshold_ for d in ens.detectors])
    # the alarm threshold: held-out frames' largest region score, at the asked share
    frame_scores = np.stack([d.held_out_scores_ for d in ens.detectors]).max(axis=0)
    assert np.mean(frame_scores > ens.threshold_) <= tiny_cfg.score.false_alarm_rate
    assert ens.threshold_ >= max(d.threshold_ for d in ens.detectors), "all regions together flag more than any one alone"
    assert ens.manifest["training_clips"] == ["01", "02", "03", "04"]


def test_metrics_on_known_cases():
    y = np.array([0, 0, 0, 1, 1, 1], bool)
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    m = frame_metrics({"a": (y, s, s > 0.35)})
    assert m["auc_pooled_raw"] == 1.0 and m["equal_error_rate"] == 0.0 and m["average_precision"] == 1.0
    assert equal_error_rate(y, s[::-1]) == 1.0
    # per-clip min-max normalisation can rescue clips scored on different scales
    m2 = frame_metrics({"a": (y, s, y), "b": (y, s + 10, y)})
    assert m2["auc_pooled_raw"] < 1.0 and m2["auc_pooled_minmax_per_clip"] == 1.0 and m2["auc_per_clip_mean"] == 1.0


def test_metrics_on_a_mixed_case_worked_by_hand():
    # normal frames score 1, 2, 3, 6; anomalous ones 4, 5, 7, 8, 9, 0.5
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], bool)
    s = np.array([1, 2, 3, 6, 4, 5, 7, 8, 9, 0.5])
    flagged = s > 4.5  # normal 6 (a false alarm); anomalous 5, 7, 8, 9 (4 detected), 4 and 0.5 missed
    m = frame_metrics({"a": (y, s, flagged)})
    assert m["at_threshold"] == {"tp": 4, "fp": 1, "tn": 3, "fn": 2, "accuracy": 0.7, "false_alarm_rate": 0.25, "detection_rate": 4 / 6}
    # pairs (anomalous, normal) ranked right: 4 > 1,2,3 (3); 5 > 1,2,3 (3); 7, 8, 9 > all (12); 0.5 > none
    assert m["auc_pooled_raw"] == pytest.approx(18 / 24)
    # precision at each anomalous frame, from the top: 9 1/1, 8 2/2, 7 3/3, 5 4/5, 4 5/6, 0.5 6/10
    assert m["average_precision"] == pytest.approx((1 + 1 + 1 + 4 / 5 + 5 / 6 + 6 / 10) / 6)


def test_equal_error_rate_interpolates_between_roc_points():
    # ROC points (fpr, fnr): thresholds 4 -> (0, 0.5), 2 -> (0.5, 0.5)... a known crossing
    y = np.array([0, 0, 1, 1], bool)
    s = np.array([1.0, 3.0, 2.0, 4.0])
    # thresholds: >=4: fpr 0, fnr .5; >=3: fpr .5, fnr .5; crossing at fpr = fnr = 0.5
    assert equal_error_rate(y, s) == pytest.approx(0.5)
    y2 = np.array([0, 0, 0, 1, 1, 1], bool)
    s2 = np.array([1.0, 2.0, 5.0, 3.0, 4.0, 6.0])
    # (fpr, fnr) at thresholds 6: (0, 2/3); 5: (1/3, 2/3); 4: (1/3, 1/3): they meet at 1/3 exactly
    assert equal_error_rate(y2, s2) == pytest.approx(1 / 3)
    # between points: (0, 1) and (1, 0) joined by a straight line cross at 0.5
    assert equal_error_rate(np.array([0, 1], bool), np.array([1.0, 1.0])) == pytest.approx(0.5)


def rank_sum_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney: the share of (anomalous, normal) pairs ranked right, a tie counting half; by counting pairs."""
    pos, neg = s[y], s[~y]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def hand_average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision summed by hand over the distinct thresholds, highest first: the recall gained at each
    threshold times the precision there (tied scores enter together, as one step)."""
    total, hits = 0.0, 0
    n_pos = int(y.sum())
    for t in np.unique(s)[::-1]:
        at = s == t
        new = int(y[at].sum())
        if new:
            hits += new
            total += (new / n_pos) * (hits / int((s >= t).sum()))
    return total


def test_metrics_agree_with_independent_rank_sum_and_hand_summed_precision_ties_included():
    rng = np.random.default_rng(3)
    clips = {}
    for cid in "abcd":
        y = rng.random(60) < 0.4
        s = np.round(rng.normal(size=60) + 1.2 * y, 1)  # rounded to a tenth: many tied scores, across the classes too
        clips[cid] = (y, s, s > 0.5)
    y = np.concatenate([c[0] for c in clips.values()])
    s = np.concatenate([c[1] for c in clips.values()])
    assert len(np.unique(s)) < len(s) / 2, "the test needs ties"
    m = frame_metrics(clips)
    assert m["auc_pooled_raw"] == pytest.approx(rank_sum_auc(y, s), abs=1e-12)
    assert m["average_precision"] == pytest.approx(hand_average_precision(y, s), abs=1e-12)
    assert m["auc_per_clip_mean"] == pytest.approx(np.mean([rank_sum_auc(c[0], c[1]) for c in clips.values()]), abs=1e-12)
    f = s > 0.5
    assert m["at_threshold"]["false_alarm_rate"] == pytest.approx(f[~y].mean())
    assert m["at_threshold"]["detection_rate"] == pytest.approx(f[y].mean())
    clips["e"] = (np.zeros(30, bool), rng.normal(size=30), np.zeros(30, bool))  # an all-normal clip
    assert frame_metrics(clips)["auc_per_clip"]["e"] is None, "a clip without anomalous frames has no AUC of its own"


def test_the_independent_references_are_right_on_a_case_worked_by_hand():
    y = np.array([1, 0, 1, 0, 0], bool)
    s = np.array([3.0, 3.0, 2.0, 1.0, 2.0])  # pairs: 3 vs (3 tie, 1, 2) = 0.5 + 1 + 1; 2 vs (3, 1, 2 tie) = 0 + 1 + 0.5
    assert rank_sum_auc(y, s) == pytest.approx(4 / 6)
    # threshold 3: recall 1/2 at precision 1/2; threshold 2: recall 2/2 at precision 2/4
    assert hand_average_precision(y, s) == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)


def test_retraining_one_region_reproduces_it_bit_for_bit(trained_work, tiny_cfg, tmp_path):
    """A run with one region left (as after an interruption) computes with the whole run's threads."""
    import shutil

    from cuboid_ad.ensemble.detector import read_checkpoint
    from cuboid_ad.pipeline.stages.train import train_ensemble

    wd = WorkDir(tmp_path / "w")
    shutil.copytree(WorkDir(trained_work).cuboids, wd.cuboids, copy_function=shutil.copy2)  # mtimes identify the tubes
    shutil.copytree(WorkDir(trained_work).models, wd.models, copy_function=shutil.copy2)
    rid = tiny_cfg.cuboids.region_ids[0]
    (wd.models / f"{rid}.pt").unlink()
    train_ensemble(wd.cuboids, wd.models, tiny_cfg, n_jobs=2, threads=1)
    a = read_checkpoint(WorkDir(trained_work).models / f"{rid}.pt")
    b = read_checkpoint(wd.models / f"{rid}.pt")
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), f"{rid}: {key} differs when trained alone"
