import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import ArtifactError
from cuboid_ad.core.grid import make_grid
from cuboid_ad.core.tubes import FLOW_GAIN
from cuboid_ad.core.windows import gather_windows, window_index, window_starts
from cuboid_ad.cuboids.slicing import TubeCutter, crop_regions, gray_flow
from cuboid_ad.cuboids.store import load_region
from cuboid_ad.pipeline.stages.extract import extract_folder
from cuboid_ad.pipeline.stages.slice import slice_folder


def test_tubes_reassemble_the_frames():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(5, 64, 96, 1), dtype=np.uint8)
    cfg = Config.from_dict({"cuboids": {"grid_rows": 2, "grid_cols": 3, "patch_size": 32, "region_overlap": 0.0}}).cuboids
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
    cfg = Config.from_dict({"cuboids": {"grid_rows": 2, "grid_cols": 2, "patch_size": 16, "region_overlap": 0.0}}).cuboids
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
    # pixel tubes (flow tubes: below) on a plain grid, whose boxes are easy to state
    tiny_cfg = tiny_cfg.with_overrides(model={"input": "frames"}, cuboids={"region_overlap": 0.0})
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


def _moving_texture(n=6, speed=2):
    """A textured 64x96 scene sliding right by ``speed`` pixels a frame."""
    rng = np.random.default_rng(1)
    wide = (rng.random((64, 96 + speed * n)) * 255).astype(np.float32)
    from scipy import ndimage

    wide = ndimage.gaussian_filter(wide, 2.0)
    wide = (wide - wide.min()) / np.ptp(wide) * 255
    return np.stack([wide[:, speed * (n - t) : speed * (n - t) + 96] for t in range(n)]).astype(np.uint8)[..., None]


@pytest.mark.parametrize("preset", ["medium", "fast", "ultrafast"])
def test_flow_tubes_measure_motion_in_patch_pixels(preset):
    frames = _moving_texture(speed=2)
    # the whole picture moves, as if the camera panned: without the camera corrections, which would take that off
    cfg = Config.from_dict({"cuboids": {"grid_rows": 2, "grid_cols": 2, "patch_size": 16, "flow_preset": preset, "region_overlap": 0.0,
                                        "camera_corrections": False}})  # fmt: skip
    regions = make_grid(64, 96, cfg.cuboids)  # 32x48 regions -> 16x16 patches: x shrinks 3x, y 2x
    tubes = TubeCutter.for_config(regions, cfg.with_overrides(model={"input": "flow"}))(frames)
    assert tubes.shape == (4, 6, 2, 16, 16) and tubes.dtype == np.uint8
    assert (tubes[:, 0] == 128).all(), "the first frame is its own predecessor: no motion"
    centre = tubes[:, 1:, :, 4:12, 4:12].astype(np.float32)
    dx = (np.median(centre[:, :, 0]) - 128) / FLOW_GAIN
    dy = (np.median(centre[:, :, 1]) - 128) / FLOW_GAIN
    assert dx == pytest.approx(2 * 16 / 48, abs=0.1), "2 frame pixels right = 2/3 of a patch pixel"
    assert abs(dy) < 0.1


def test_flow_tubes_do_not_depend_on_chunking():
    frames = _moving_texture(n=9, speed=3)
    cfg = Config.from_dict({"cuboids": {"grid_rows": 2, "grid_cols": 3, "patch_size": 16}}).cuboids
    regions = make_grid(64, 96, cfg)
    whole = TubeCutter(regions, 16, 1.0, "flow", "medium")(frames)
    cut = TubeCutter(regions, 16, 1.0, "flow", "medium")
    parts = np.concatenate([cut(frames[:4]), cut(frames[4:5]), cut(frames[5:])], axis=1)
    assert np.array_equal(whole, parts)


def test_frame_pairs_flows_computed_two_at_a_time_are_those_computed_one_by_one():
    from concurrent.futures import ThreadPoolExecutor

    gray = _moving_texture(n=7, speed=3)[..., 0]
    alone = gray_flow(gray[0], gray[1:], "medium", exposure=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        halves = gray_flow(gray[0], gray[1:], "medium", exposure=True, pool=pool)
    assert np.abs(alone[..., 0]).mean() > 1.0, "the scene moves"
    assert np.array_equal(alone, halves)


def test_flow_tubes_are_refused_by_a_pixel_model_and_back(tiny_data, tiny_cfg, tmp_path):
    frames, cub = tmp_path / "frames", tmp_path / "cuboids"
    flow_cfg = tiny_cfg.with_overrides(model={"input": "flow"})
    diff_cfg = tiny_cfg.with_overrides(model={"input": "diff"})
    extract_folder(tiny_data / "train", frames, tiny_cfg)
    slice_folder(frames, cub, flow_cfg)
    tubes, _, _ = load_region(cub, "r0c0", flow_cfg)
    assert tubes[0].tube.shape == (80, 2, 16, 16)
    with pytest.raises(ArtifactError, match="the tubes hold flow, model.input 'diff' needs pixels"):
        load_region(cub, "r0c0", diff_cfg)
    slice_folder(frames, cub, diff_cfg)  # not up to date for a pixel model: cut again
    assert load_region(cub, "r0c0", diff_cfg)[0][0].tube.shape == (80, 1, 16, 16)
