import numpy as np

from core.config import CuboidConfig
from core.grid import make_grid
from ensemble.anomaly_map import AnomalyMapper


def test_overlapping_regions_are_averaged_in_units_of_normal():
    regions = make_grid(40, 60, CuboidConfig(grid_rows=1, grid_cols=2, region_overlap=0.5))
    assert [(r.left, r.width) for r in regions] == [(0, 40), (20, 40)]
    scale = np.array([0.01, 0.04], dtype=np.float32)
    errors = np.zeros((1, 2, 8, 8), dtype=np.float32)
    errors[0, 0] = 0.02  # twice region 0's normal scale; region 1 sees nothing
    maps = AnomalyMapper(regions, (40, 60), scale, blur_sigma=0.0)(errors)
    assert maps.shape == (1, 40, 60)
    np.testing.assert_allclose(maps[0, :, :20], 2.0, rtol=1e-6)  # region 0 alone
    np.testing.assert_allclose(maps[0, :, 20:40], 1.0, rtol=1e-6)  # shared: the mean of 2 and 0
    np.testing.assert_allclose(maps[0, :, 40:], 0.0, atol=1e-7)  # region 1 alone
