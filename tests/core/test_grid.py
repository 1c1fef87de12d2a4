import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cuboid_ad.core.config import CuboidConfig
from cuboid_ad.core.errors import ConfigError
from cuboid_ad.core.grid import make_grid, region_cells


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(16, 400),
    width=st.integers(16, 400),
    rows=st.integers(1, 6),
    cols=st.integers(1, 6),
    overlap=st.sampled_from([0.0, 0.1, 0.25, 0.5]),
)
def test_regions_tile_the_whole_frame(height, width, rows, cols, overlap):
    cfg = CuboidConfig(grid_rows=rows, grid_cols=cols, region_overlap=overlap)
    try:
        regions = make_grid(height, width, cfg)
    except ConfigError:
        # refused only when a region would truly be under 8 pixels a side (nominal size, less 1 for rounding)
        nominal = min(height / (rows - (rows - 1) * overlap), width / (cols - (cols - 1) * overlap))
        assert nominal < 9, f"a {rows}x{cols} grid of {nominal:.1f}-pixel regions on {width}x{height} refused"
        return
    cover = np.zeros((height, width), dtype=int)
    for r in regions:
        cover[r.box] += 1
        assert r.height >= 8 and r.width >= 8
    assert (cover >= 1).all()
    if overlap == 0:
        assert (cover == 1).all()
    assert [r.region_id for r in regions] == cfg.region_ids
    # the cells drawn in pictures tile the frame once, each inside its region's box
    boxes = [(r.top, r.left, r.height, r.width) for r in regions]
    cells = region_cells(boxes, height, width)
    once = np.zeros((height, width), dtype=int)
    for (top, left, h, w), r in zip(cells, regions):
        once[top : top + h, left : left + w] += 1
        assert r.top <= top and top + h <= r.top + r.height and r.left <= left and left + w <= r.left + r.width
    assert (once == 1).all()
    if overlap == 0:
        assert cells == boxes


def test_overlapping_neighbours_share_the_requested_fraction():
    regions = make_grid(100, 100, CuboidConfig(grid_rows=1, grid_cols=2, region_overlap=0.5))
    a, b = regions
    shared = a.left + a.width - b.left
    assert shared == pytest.approx(0.5 * a.width, abs=1)


def test_a_grid_finer_than_the_frame_is_refused():
    with pytest.raises(ConfigError, match="fewer rows/columns"):
        make_grid(40, 40, CuboidConfig(grid_rows=10, grid_cols=2))
