import numpy as np

from cuboid_ad.core.config import CuboidConfig
from cuboid_ad.core.grid import make_grid
from cuboid_ad.ensemble.anomaly_map import AnomalyMapper


def test_overlapping_regions_are_averaged():
    regions = make_grid(40, 60, CuboidConfig(grid_rows=1, grid_cols=2, region_overlap=0.5))
    assert [(r.left, r.width) for r in regions] == [(0, 40), (20, 40)]
    cells = np.zeros((1, 2, 4, 4), dtype=np.float32)
    cells[0, 0] = 2.0  # every cell of region 0 at z 2; region 1 sees nothing
    maps = AnomalyMapper(regions, (40, 60))(cells)
    assert maps.shape == (1, 40, 60)
    np.testing.assert_allclose(maps[0, :, :20], 2.0, rtol=1e-6)  # region 0 alone
    np.testing.assert_allclose(maps[0, :, 20:40], 1.0, rtol=1e-6)  # shared: the mean of 2 and 0
    np.testing.assert_allclose(maps[0, :, 40:], 0.0, atol=1e-7)  # region 1 alone


def test_a_hot_cell_lands_where_the_cell_is():
    regions = make_grid(32, 32, CuboidConfig(grid_rows=1, grid_cols=1, region_overlap=0.0))
    cells = np.zeros((1, 1, 4, 4), dtype=np.float32)
    cells[0, 0, 3, 0] = 10.0  # bottom-left cell
    amap = AnomalyMapper(regions, (32, 32))(cells)[0]
    y, x = np.unravel_index(amap.argmax(), amap.shape)
    assert y >= 24 and x < 8 and amap.max() <= 10.0
