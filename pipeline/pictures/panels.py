"""The report video's frames: input | reconstruction | anomaly map over the input with the region grid, under a caption.

Pure drawing with numpy and Pillow, one frame at a time (matplotlib would be
far slower per frame); small working sizes are enlarged to stay readable.
"""

from __future__ import annotations

from functools import lru_cache

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cuboid_ad.core.grid import region_cells
from cuboid_ad.pipeline.pictures.figures import map_range

HEADER = 34  # pixels of caption (two lines) above the video's panels
MIN_PANEL_WIDTH = 320  # small working sizes are enlarged (nearest neighbour) to at least this


_INFERNO = (matplotlib.colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.float32)


def overlay(gray_rgb: np.ndarray, amap: np.ndarray, threshold: float) -> np.ndarray:
    """The anomaly map over an RGB frame: inferno colours from half the alarm threshold up (see ``map_range``)."""
    lo, hi = map_range(threshold)
    level = np.clip(amap / hi, 0.0, 1.0)
    colour = _INFERNO[(level * 255).astype(np.uint8)]
    alpha = np.where(amap >= lo, 0.35 + 0.45 * np.clip((amap - lo) / (hi - lo), 0.0, 1.0), 0.0)[..., None]
    return (gray_rgb * (1.0 - alpha) + colour * alpha).astype(np.uint8)


def draw_grid(img: np.ndarray, boxes: np.ndarray, hot: np.ndarray) -> None:
    """Outline every region in place: its cell thin grey (overlaps split down the middle), and
    its whole box thick red when above its threshold."""
    H, W = img.shape[:2]
    outlines = [(cell, False) for cell in region_cells(boxes, H, W)] + [(tuple(b), True) for b, is_hot in zip(boxes.tolist(), hot.tolist()) if is_hot]
    for (top, left, h, w), is_hot in outlines:
        colour, t = ((230, 30, 30), 2) if is_hot else ((150, 150, 150), 1)
        y0, y1, x0, x1 = top, min(top + h, H) - 1, left, min(left + w, W) - 1
        img[y0 : y0 + t, x0 : x1 + 1] = colour
        img[max(y1 - t + 1, 0) : y1 + 1, x0 : x1 + 1] = colour
        img[y0 : y1 + 1, x0 : x0 + t] = colour
        img[y0 : y1 + 1, max(x1 - t + 1, 0) : x1 + 1] = colour


def _rgb(frame: np.ndarray) -> np.ndarray:
    return np.repeat(frame, 3, axis=-1) if frame.shape[-1] == 1 else frame


def panel_scale(width: int) -> int:
    return max(1, -(-MIN_PANEL_WIDTH // width))


def compose_frame(
    frame: np.ndarray, recon: np.ndarray, amap: np.ndarray, threshold: float, boxes: np.ndarray, hot: np.ndarray, caption: str,
    recon_label: str = "reconstruction",
) -> np.ndarray:
    """input | reconstruction | overlay under a two-line caption: uint8 RGB (HEADER + s H, 3 s W, 3), s = panel_scale(W)."""
    H, W = amap.shape
    base = _rgb(frame)
    rec = np.repeat((np.clip(recon, 0.0, 1.0) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    ov = overlay(base.astype(np.float32), amap, threshold)
    draw_grid(ov, boxes, hot)
    panels = np.concatenate([base, rec, ov], axis=1)
    k = panel_scale(W)
    if k > 1:
        panels = panels.repeat(k, axis=0).repeat(k, axis=1)
    canvas = np.zeros((HEADER + panels.shape[0], panels.shape[1], 3), np.uint8)
    canvas[HEADER:] = panels
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    font = _font()
    for i, label in enumerate(("input", recon_label, "anomaly map (grid: regions, red: above threshold)")):
        draw.text((i * k * W + 4, 2), label, fill=(200, 200, 200), font=font)
    draw.text((4, 18), caption, fill=(255, 90, 90) if hot.any() else (200, 200, 200), font=font)
    return np.asarray(img)


@lru_cache(maxsize=1)
def _font():
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow without FreeType scaling
        return ImageFont.load_default()


def panel_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) of a composed frame (:func:`compose_frame`) for frames of ``height`` x ``width``."""
    k = panel_scale(width)
    return HEADER + height * k, 3 * width * k
