import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cuboids.grid import make_grid
from cuboids.slicing import crop_regions, gather_windows, window_index, window_starts
from cuboids.store import load_region, slice_folder
from pipeline.config import Config
from pipeline.errors import ArtifactError
from pipeline.extract import extract_folder


def test_tubes_reassemble_the_frames():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(5, 64, 96, 1), dtype=np.uint8)
    cfg = Config.from_dict({"cuboids": {"grid_rows": 2, "grid_cols": 3, "patch_size": 32}}).cuboids
    regions = make_grid(64, 96, cfg)
    tubes = crop_regions(frames, regions, 32)  # regions are 32x32: no resampling
    assert tubes.shape == (6, 5, 1, 32, 32)
    back = np.zeros_like(frames)
    for r, tube in zip(regions, tubes):
        back[:, r.box[0], r.box[1], :] = tube.transpose(0, 2, 3, 1)
    assert np.array_equal(back, frames)


def test_resized_crops_keep_the_content():
    frames = np.zeros((1, 60, 90, 1), dtype=np.uint8)
    frames[:, :30, :45] = 200  # top-left region bright
    cfg = Config.from_dict({"cuboids": {"grid_rows": 2, "grid_cols": 2, "patch_size": 16}}).cuboids
    tubes = crop_regions(frames, make_grid(60, 90, cfg), 16, blur_sigma=1.0)
    assert tubes[0].min() == 200 and tubes[3].max() == 0


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 60), T=st.integers(2, 12), S=st.integers(1, 12))
def test_windows_fit_in_the_clip(n, T, S):
    starts = window_starts(n, T, S)
    assert (starts + T <= n).all()
    if n >= T:
        assert starts[0] == 0 and n - (starts[-1] + T) < S


def test_window_index_clamps_the_predecessor_of_frame_zero():
    idx = window_index(np.array([0, 3]), 4, with_previous=True, first=0, last=9)
    assert idx.tolist() == [[0, 0, 1, 2, 3], [2, 3, 4, 5, 6]]
    tube = np.arange(10)[:, None, None, None]
    assert gather_windows(tube, np.array([2]), 3)[0, :, 0, 0, 0].tolist() == [2, 3, 4]


def test_region_store_round_trip_and_config_check(tiny_data, tiny_cfg, tmp_path):
    frames, cub = tmp_path / "frames", tmp_path / "cuboids"
    extract_folder(tiny_data / "train", frames, tiny_cfg)
    slice_folder(frames, cub, tiny_cfg)
    assert sorted(p.name for p in cub.iterdir()) == tiny_cfg.cuboids.region_ids
    tubes, region, frame_size = load_region(cub, "r1c2", tiny_cfg)
    assert frame_size == (64, 96) and (region.top, region.left, region.height, region.width) == (32, 64, 32, 32)
    assert len(tubes) == 4 and tubes[0].tube.shape == (80, 1, 16, 16) and tubes[0].tube.dtype == np.uint8
    assert tubes[0].window_starts.tolist() == list(range(0, 73, 2))
    with h5py.File(frames / "01.h5") as fh:  # the stored tube is the crop of the stored frames
        expected = crop_regions(fh["frames"][()], [region], 16, tiny_cfg.cuboids.blur_sigma)[0]
    assert np.array_equal(tubes[0].tube, expected)
    with pytest.raises(ArtifactError, match="cuboids.patch_size was 16, now 32"):
        load_region(cub, "r1c2", tiny_cfg.with_overrides(cuboids={"patch_size": 32}))
    # a new grid replaces the old regions' folders
    slice_folder(frames, cub, tiny_cfg.with_overrides(cuboids={"grid_rows": 1}))
    assert sorted(p.name for p in cub.iterdir()) == ["r0c0", "r0c1", "r0c2"]
