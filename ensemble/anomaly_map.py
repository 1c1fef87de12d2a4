"""Per-pixel anomaly maps of whole frames, assembled from the regions' pixel errors.

Each region's P x P error map is divided by that region's normal pixel scale
(the 99th percentile of its pixel errors on normal frames), so 1.0
means "as large as the top 1% of normal" everywhere in the frame; lightly
smoothed (at patch resolution); resized back to the region's box;
and placed at its position (overlapping regions are averaged).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.arrays import gaussian_blur
from core.grid import Region


class AnomalyMapper:
    def __init__(self, regions: list[Region], frame_size: tuple[int, int], pixel_scale: np.ndarray, blur_sigma: float = 2.0):
        self.regions = regions
        self.height, self.width = frame_size
        self.scale = torch.as_tensor(pixel_scale, dtype=torch.float32)
        self.blur_sigma = blur_sigma
        weight = torch.zeros(self.height, self.width)
        for r in regions:
            rows, cols = r.box
            weight[rows, cols] += 1
        if bool((weight == 0).any()):  # pragma: no cover - make_grid always tiles the frame
            raise ValueError("regions do not cover the frame")
        self.weight = weight

    @torch.inference_mode()
    def __call__(self, pixel_errors: np.ndarray) -> np.ndarray:
        """pixel_errors ``(n, R, P, P)`` -> anomaly maps ``(n, height, width)`` float32."""
        n, R, P, _ = pixel_errors.shape
        x = torch.from_numpy(pixel_errors) / self.scale[None, :, None, None]
        if self.blur_sigma > 0:  # blurred at patch resolution: the same smoothing, a fraction of the cost
            x = gaussian_blur(x.reshape(n * R, 1, P, P), self.patch_sigma(P)).reshape(n, R, P, P)
        out = torch.zeros(n, self.height, self.width)
        for i, r in enumerate(self.regions):
            rows, cols = r.box
            patch = F.interpolate(x[:, i : i + 1], size=(r.height, r.width), mode="bilinear", align_corners=False)
            out[:, rows, cols] += patch[:, 0]
        out /= self.weight
        return out.numpy()

    def patch_sigma(self, patch_size: int) -> float:
        """``blur_sigma`` (frame pixels) in patch pixels."""
        side = min(min(r.height, r.width) for r in self.regions)
        return self.blur_sigma * patch_size / side
