import numpy as np

from bench.motion import Baseline, region_motion, region_speed
from core.labels import frame_labels, load_labels
from pipeline.synthetic import render_clip, write_video


def test_speed_of_a_still_clip_is_zero(tmp_path, tiny_cfg):
    still = write_video(np.full((12, 64, 96), 90, np.uint8), tmp_path / "still.mkv")
    speed = region_speed(still, tiny_cfg)
    assert speed.shape == (12, 6)
    assert (speed == 0).all()


def test_motion_scores_a_mover_where_nothing_goes_above_the_normal_frames(tiny_data, tiny_cfg):
    y = frame_labels(*load_labels(tiny_data / "labels.json")["01"])
    score = Baseline(tiny_cfg, region_motion).fit(tiny_data / "train").score_samples(tiny_data / "test" / "01.mkv")
    assert score.shape == y.shape
    assert np.median(score[~y]) < score[y].min()


def test_speed_scores_a_fast_mover_above_the_normal_frames(tmp_path, tiny_data, tiny_cfg):
    frames, y = render_clip(80, 64, 96, seed=778, anomaly="fast", anomaly_first=30)
    clip = write_video(frames, tmp_path / "fast.mkv")
    score = Baseline(tiny_cfg, region_speed).fit(tiny_data / "train").score_samples(clip)
    assert score.shape == y.shape
    before = score[: np.flatnonzero(y)[0]]  # the frames after it leaves carry its smoothed speed for a while
    assert before.max() < np.percentile(score[y], 10)
