"""Stage 6, inspect: the heatmaps of a scored clip, drawn from its maps.h5 (scored first when it has none).

``frame_NNNNNN.png`` for chosen frames (the strongest flagged peaks by default)
and ``regions_time.png`` for the whole clip; see ``pipeline.pictures.figures``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cuboid_ad.pipeline.media.decode import decode_frames
from cuboid_ad.pipeline.pictures.figures import frame_figure, frame_title, pick_frames, save_figure, streams_text, timeline_figure
from cuboid_ad.pipeline.scoring.outputs import maps_source, read_maps
from cuboid_ad.pipeline.stages.score import score_video


def write_heatmaps(maps_path: str | Path, video_path: str | Path, out_path: str | Path, frames: list[int] | None = None, n_frames: int = 6,
                   truth: np.ndarray | None = None) -> list[Path]:  # fmt: skip
    """PNGs for ``frames`` (1-based; default: the strongest flagged peaks) and the regions x time matrix."""
    out_path = Path(out_path)
    m = read_maps(maps_path)
    chosen = [f - 1 for f in frames if 1 <= f <= m.n_frames] if frames else pick_frames(m.score, m.anomalous, n_frames)
    amaps = m.anomaly_maps(chosen)
    pictures = decode_frames(video_path, m.cfg, chosen, m.stream)
    name = Path(video_path).name
    fig, _ = timeline_figure(m.region_z, m.score, m.anomalous, m.region_ids, m.times, m.threshold, truth, title=name)
    written = [save_figure(fig, out_path / "regions_time.png")]
    for i in chosen:
        streams = streams_text(m.region_z[i], m.stream_z[i], m.region_ids, m.streams)
        title = frame_title(name, i, m.times[i], m.score[i], m.anomalous[i], streams)
        fig = frame_figure(pictures[i], amaps[i], m.boxes, m.region_ids, m.region_z[i], m.threshold, title)
        written.append(save_figure(fig, out_path / f"frame_{i + 1:06d}.png"))
    return written


def heatmaps_of(video_path: str | Path, models_path: str | Path, out_path: str | Path, frames: list[int] | None = None, n_frames: int = 6,
                device: str = "cpu", allow_damaged: bool = False, stream: int = 0) -> list[Path]:
    """The heatmaps of ``video_path`` (its video ``stream``) into ``out_path/heatmaps``, from ``out_path/maps.h5``
    when it holds this clip's scores, else scoring the clip first (see :func:`write_heatmaps`)."""
    out_path = Path(out_path)
    maps_path = out_path / "maps.h5"
    if maps_source(maps_path) != (str(Path(video_path).resolve()), stream):
        score_video(video_path, models_path, out_path, device=device, allow_damaged=allow_damaged, stream=stream)
    return write_heatmaps(maps_path, video_path, out_path / "heatmaps", frames, n_frames)
