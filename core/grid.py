"""The spatial grid: which rectangle of the frame each region covers (the coordinates every floor speaks of).

Regions are named ``r<row>c<col>``. With overlap o, neighbouring regions share
a fraction o of their size; the boxes always tile the whole frame, so every
pixel belongs to at least one region.
"""

from __future__ import annotations

from dataclasses import dataclass

from cuboid_ad.core.config import CuboidConfig
from cuboid_ad.core.errors import ConfigError

MIN_REGION_PIXELS = 8


@dataclass(frozen=True)
class Region:
    region_id: str
    row: int
    col: int
    top: int
    left: int
    height: int
    width: int

    @property
    def box(self) -> tuple[slice, slice]:
        """(rows, cols) slices of the frame this region covers."""
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def _axis_spans(length: int, n: int, overlap: float) -> list[tuple[int, int]]:
    size = length / (n - (n - 1) * overlap)
    step = size * (1 - overlap)
    spans = []
    for i in range(n):
        start = int(round(i * step))
        end = length if i == n - 1 else int(round(i * step + size))
        spans.append((start, end - start))
    return spans


def make_grid(frame_height: int, frame_width: int, cfg: CuboidConfig) -> list[Region]:
    """The regions of a ``frame_height`` x ``frame_width`` frame, row by row."""
    rows = _axis_spans(frame_height, cfg.grid_rows, cfg.region_overlap)
    cols = _axis_spans(frame_width, cfg.grid_cols, cfg.region_overlap)
    smallest = min(h for _, h in rows), min(w for _, w in cols)
    if min(smallest) < MIN_REGION_PIXELS:
        raise ConfigError(
            f"a {cfg.grid_rows}x{cfg.grid_cols} grid on {frame_width}x{frame_height} frames gives regions of "
            f"{smallest[1]}x{smallest[0]} pixels; use fewer rows/columns (regions need >= {MIN_REGION_PIXELS} pixels a side)"
        )
    return [
        Region(f"r{r}c{c}", r, c, top, left, height, width)
        for r, (top, height) in enumerate(rows)
        for c, (left, width) in enumerate(cols)
    ]


def region_cells(boxes, frame_height: int, frame_width: int) -> list[tuple[int, int, int, int]]:
    """Each grid region's cell ``(top, left, height, width)``: its box with every overlap
    split down the middle, so the cells tile the frame once (and equal the boxes without overlap).

    ``boxes`` are the regions' ``(top, left, height, width)``, as stored in ``maps.h5``.
    Pictures outline the cells, which stay readable however much the regions overlap.
    """

    def cuts(spans: list[tuple[int, int]], length: int) -> dict[tuple[int, int], tuple[int, int]]:
        spans = sorted(set(spans))
        edges = [0] + [(start + prev + size) // 2 for (prev, size), (start, _) in zip(spans, spans[1:])] + [length]
        return {span: (edges[i], edges[i + 1]) for i, span in enumerate(spans)}

    boxes = [tuple(int(v) for v in b) for b in boxes]
    rows = cuts([(t, h) for t, _, h, _ in boxes], frame_height)
    cols = cuts([(left, w) for _, left, _, w in boxes], frame_width)
    cells = []
    for top, left, h, w in boxes:
        (y0, y1), (x0, x1) = rows[(top, h)], cols[(left, w)]
        cells.append((y0, x0, y1 - y0, x1 - x0))
    return cells
