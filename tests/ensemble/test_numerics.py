"""Degenerate data: constant (all-black) clips train without NaN and score to finite values."""

import numpy as np

from cuboid_ad.ensemble.ensemble import Ensemble
from cuboid_ad.pipeline.media.synthetic import render_clip, write_video
from cuboid_ad.pipeline.stages.extract import extract_folder
from cuboid_ad.pipeline.stages.score import score_video
from cuboid_ad.pipeline.stages.slice import slice_folder
from cuboid_ad.pipeline.stages.train import train_ensemble


def test_all_black_training_video(tmp_path, tiny_cfg):
    cfg = tiny_cfg.with_overrides(train={"epochs": 2})
    black = np.zeros((40, 64, 96), np.uint8)
    for i in range(2):
        write_video(black, tmp_path / "train" / f"{i}.mkv")
    extract_folder(tmp_path / "train", tmp_path / "w" / "frames", cfg)
    slice_folder(tmp_path / "w" / "frames", tmp_path / "w" / "cuboids", cfg)
    train_ensemble(tmp_path / "w" / "cuboids", tmp_path / "w" / "models", cfg, n_jobs=2)
    ens = Ensemble.load(tmp_path / "w" / "models")
    for d in ens.detectors:
        for stream, fitted in d.fitted_.items():
            for name, values in fitted.stats.__dict__.items():
                assert np.isfinite(values).all(), f"{stream} {name}"
            assert (fitted.stats.std > 0).all(), f"{stream}: zero spread must be floored, or every z is infinite"
        assert np.isfinite(d.held_out_scores_).all() and np.isfinite(d.threshold_)
    assert np.isfinite(ens.threshold_)
    same = score_video(tmp_path / "train" / "0.mkv", tmp_path / "w" / "models", tmp_path / "o1")
    assert np.isfinite(same.score).all()
    frames, _ = render_clip(30, 64, 96, seed=1)
    other = score_video(write_video(frames, tmp_path / "busy.mkv"), tmp_path / "w" / "models", tmp_path / "o2")
    assert np.isfinite(other.score).all() and np.isfinite(other.region_z).all()
