import numpy as np

from bench.motion import fit_baseline, region_motion, region_speed
from cuboid_ad.core.labels import frame_labels, load_labels
from cuboid_ad.pipeline.media.synthetic import render_clip, write_video


def test_speed_of_a_still_clip_is_zero(tmp_path, tiny_cfg):
    still = write_video(np.full((12, 64, 96), 90, np.uint8), tmp_path / "still.mkv")
    speed = region_speed(still, tiny_cfg)
    assert speed.shape == (12, 6)
    assert (speed == 0).all()


def test_motion_scores_a_mover_where_nothing_goes_above_the_normal_frames(tiny_data, tiny_cfg):
    y = frame_labels(*load_labels(tiny_data / "labels.json")["01"])
    score = fit_baseline("motion", tiny_data / "train", tiny_cfg).decision_function(region_motion(tiny_data / "test" / "01.mkv", tiny_cfg))
    assert score.shape == y.shape
    assert np.median(score[~y]) < score[y].min()


def test_speed_scores_a_fast_mover_above_the_normal_frames(tmp_path, tiny_data, tiny_cfg):
    frames, y = render_clip(80, 64, 96, seed=778, anomaly="fast", anomaly_first=30)
    clip = write_video(frames, tmp_path / "fast.mkv")
    score = fit_baseline("speed", tiny_data / "train", tiny_cfg).decision_function(region_speed(clip, tiny_cfg))
    assert score.shape == y.shape
    before = score[: np.flatnonzero(y)[0]]  # the frames after it leaves carry its smoothed speed for a while
    assert before.max() < np.percentile(score[y], 10)
