"""Whole-frame pictures assembled from per-region arrays: anomaly maps and reconstructions.

Each region's ``h x w`` array (its cells' z for an anomaly map, its ``P x P``
reconstruction for the report) is resized to the region's box, bilinearly, and
placed at its position; where regions overlap, their values are averaged. An
anomaly map is therefore in the units of the cell scores: the alarm threshold
means the same on the map as on the frame score.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cuboid_ad.core.grid import Region


class AnomalyMapper:
    def __init__(self, regions: list[Region], frame_size: tuple[int, int]):
        self.regions = regions
        self.height, self.width = frame_size
        weight = torch.zeros(self.height, self.width)
        for r in regions:
            rows, cols = r.box
            weight[rows, cols] += 1
        if bool((weight == 0).any()):  # pragma: no cover - make_grid always tiles the frame
            raise ValueError("regions do not cover the frame")
        self.weight = weight

    @torch.inference_mode()
    def __call__(self, per_region: np.ndarray) -> np.ndarray:
        """``(n, R, h, w)`` -> ``(n, height, width)`` float32."""
        x = torch.from_numpy(np.ascontiguousarray(per_region, dtype=np.float32))
        out = torch.zeros(len(x), self.height, self.width)
        for i, r in enumerate(self.regions):
            rows, cols = r.box
            patch = F.interpolate(x[:, i : i + 1], size=(r.height, r.width), mode="bilinear", align_corners=False)
            out[:, rows, cols] += patch[:, 0]
        out /= self.weight
        return out.numpy()
