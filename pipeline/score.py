"""Stage 4, score: one new clip through the fitted ensemble, in memory, frame chunk by chunk.

Outputs in ``out_path``:

``scores.csv``
    one row per decoded frame: ``frame`` (1-based), ``time_s``, ``score``
    (max over regions of the normalised error z), ``anomalous`` (0/1: some
    region above its threshold, i.e. z > threshold_sigma), then one column per
    region id holding that region's z.
``maps.h5`` (unless ``maps=False``)
    ``maps`` float16 (n_frames, height, width): per-pixel anomaly map, in units
    of the region's normal 99th-percentile pixel error, rounded to 1/32; ``region_errors``,
    ``region_z`` (n_frames, n_regions); ``score``, ``anomalous`` (n_frames,);
    ``reconstructions`` uint8 (n_frames, n_regions, P, P): what each region's model
    rebuilt, as ``ensemble.detector.shown_reconstruction`` draws it, times 255;
    attributes: config, source, fps, region ids and boxes, thresholds.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from core.arrays import runs
from core.artifacts import atomic_path, stamp
from core.config import Config
from core.errors import InputError
from core.progress import progress
from cuboids.slicing import TubeCutter
from ensemble.anomaly_map import AnomalyMapper
from ensemble.ensemble import Ensemble, ScoredFrames
from pipeline.background import Background, prefetch
from pipeline.ffmpeg_io import open_clip, output_fps, read_frames, working_size

log = logging.getLogger(__name__)

MAP_STEPS = 32  # maps.h5 stores anomaly maps rounded to 1/MAP_STEPS


@dataclass(frozen=True)
class Segment:
    """A run of consecutive anomalous frames (1-based, inclusive)."""

    first_frame: int
    last_frame: int
    start_s: float
    end_s: float
    peak_score: float
    regions: tuple[str, ...]  # regions above threshold in the segment, strongest first


@dataclass
class ScoreResult:
    source: Path
    fps: float
    region_ids: list[str]
    score: np.ndarray  # (n_frames,)
    anomalous: np.ndarray  # (n_frames,) bool
    region_z: np.ndarray  # (n_frames, R)
    threshold_sigma: float
    seconds: float
    out_path: Path | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return len(self.score)

    def segments(self) -> list[Segment]:
        out = []
        for a, b in runs(self.anomalous):
            z = self.region_z[a:b]
            peak = z.max(axis=0)
            fired = [self.region_ids[i] for i in np.argsort(-peak) if peak[i] > self.threshold_sigma]
            out.append(Segment(int(a + 1), int(b), a / self.fps, (b - 1) / self.fps, float(self.score[a:b].max()), tuple(fired)))
        return out


def score_video(
    video_path: str | Path,
    models_path: str | Path,
    out_path: str | Path | None = None,
    cfg: Config | None = None,
    maps: bool = True,
    chunk_frames: int = 64,
    device: str = "cpu",
    ensemble: Ensemble | None = None,
    allow_damaged: bool = False,
) -> ScoreResult:
    """Score every frame of a clip (video file or frame folder) with the models in ``models_path``.

    ``cfg``, when given, must match the models' config. With ``out_path`` None
    nothing is written (the result is returned only).
    """
    t0 = time.perf_counter()
    ens = ensemble or Ensemble.load(models_path, cfg, device)
    cfg = ens.cfg
    src = open_clip(video_path, cfg.extract)
    width, height = working_size(src, cfg.extract)
    if (height, width) != tuple(ens.frame_size):
        raise InputError(
            f"{src.path}: decodes to {width}x{height} frames but the models were trained on "
            f"{ens.frame_size[1]}x{ens.frame_size[0]}; set extract.frame_width or use footage of the same camera"
        )
    fps = output_fps(src, cfg.extract)
    cut = TubeCutter.for_config(ens.regions, cfg)
    scorer = ens.scorer()
    mapper = AnomalyMapper(ens.regions, ens.frame_size, ens.stat("pixel_scale")) if maps and out_path else None
    R = len(ens.regions)
    parts: list[ScoredFrames] = []
    with ExitStack() as stack:
        writer = _Writers(stack, Path(out_path), cfg, ens, src.path, fps, mapper is not None) if out_path else None
        bar = stack.enter_context(progress(total=src.n_frames_estimate or None, desc=f"score {src.path.name}", unit="frame"))
        # decoding and cutting tubes (optical flow included) run ahead in one helper
        # thread, maps and writing trail in another
        background = stack.enter_context(Background())
        decoded = read_frames(src, cfg.extract, chunk_frames, allow_damaged)
        for frames, tubes in prefetch((frames, cut(frames)) for frames in decoded):
            scored = scorer.push(tubes)
            bar.update(len(frames))
            _collect(scored, parts, writer, mapper, fps, background)
        try:
            last = scorer.finish()
        except InputError as exc:
            raise InputError(f"{src.path.name}: {exc}") from None
        _collect(last, parts, writer, mapper, fps, background)
        background.close()
        files = writer.files if writer else []
    result = ScoreResult(
        source=src.path,
        fps=fps,
        region_ids=ens.region_ids,
        score=np.concatenate([p.score for p in parts]) if parts else np.zeros(0),
        anomalous=np.concatenate([p.anomalous for p in parts]) if parts else np.zeros(0, bool),
        region_z=np.concatenate([p.z for p in parts]) if parts else np.zeros((0, R)),
        threshold_sigma=cfg.score.threshold_sigma,
        seconds=time.perf_counter() - t0,
        out_path=Path(out_path) if out_path else None,
        files=files,
    )
    log.info("scored %s: %d frames in %.1f s (%.1f fps)", src.path.name, result.n_frames, result.seconds, result.n_frames / result.seconds)
    return result


def _collect(scored: ScoredFrames, parts: list[ScoredFrames], writer, mapper, fps: float, background: Background) -> None:
    if not len(scored):
        return
    # keep only the small per-frame arrays; pixel errors go to disk or away
    # (copies: a view, even an empty one, would keep the whole chunk's pixel errors alive)
    empty = np.empty((0, *scored.pixel_errors.shape[1:]), np.float32)
    parts.append(ScoredFrames(scored.first, scored.region_errors.copy(), scored.z.copy(), scored.score.copy(), scored.anomalous.copy(), empty, empty))
    if writer:
        background.submit(lambda: writer.write(scored, mapper(scored.pixel_errors) if mapper else None, fps))


class _Writers:
    """scores.csv and maps.h5 written row by row to temporary names, renamed when the clip is done."""

    def __init__(self, stack: ExitStack, out_path: Path, cfg: Config, ens: Ensemble, source: Path, fps: float, with_maps: bool):
        out_path.mkdir(parents=True, exist_ok=True)
        self.files = [out_path / "scores.csv"]
        tmp_csv = stack.enter_context(atomic_path(self.files[0]))
        self.csv_file = stack.enter_context(open(tmp_csv, "w", newline="", encoding="utf-8"))
        self.csv = csv.writer(self.csv_file)
        self.csv.writerow(["frame", "time_s", "score", "anomalous", *ens.region_ids])
        self.h5 = None
        if with_maps:
            self.files.append(out_path / "maps.h5")
            tmp_h5 = stack.enter_context(atomic_path(self.files[1]))
            self.h5 = stack.enter_context(h5py.File(tmp_h5, "w"))
            H, W = ens.frame_size
            R = len(ens.regions)
            P = cfg.cuboids.patch_size
            self.ds = {
                "maps": self.h5.create_dataset(
                    "maps", (0, H, W), np.float16, maxshape=(None, H, W), chunks=(1, H, W), compression="gzip", compression_opts=1, shuffle=True,
                    rdcc_nbytes=0,  # written in whole chunks: a cache only holds memory (see cuboids.store)
                ),
                "region_errors": self.h5.create_dataset("region_errors", (0, R), np.float32, maxshape=(None, R), chunks=(256, R)),
                "region_z": self.h5.create_dataset("region_z", (0, R), np.float32, maxshape=(None, R), chunks=(256, R)),
                "score": self.h5.create_dataset("score", (0,), np.float32, maxshape=(None,), chunks=(1024,)),
                "anomalous": self.h5.create_dataset("anomalous", (0,), np.uint8, maxshape=(None,), chunks=(1024,)),
                "reconstructions": self.h5.create_dataset(
                    "reconstructions", (0, R, P, P), np.uint8, maxshape=(None, R, P, P), chunks=(16, R, P, P), compression="gzip",
                    compression_opts=1, rdcc_nbytes=0,
                ),
            }
            stamp(
                self.h5.attrs,
                "maps",
                cfg,
                source_path=str(source.resolve()),
                fps=fps,
                region_ids=json.dumps(ens.region_ids),
                boxes=np.array([[r.top, r.left, r.height, r.width] for r in ens.regions]),
                thresholds=ens.stat("threshold"),
                threshold_sigma=cfg.score.threshold_sigma,
            )

    def write(self, s: ScoredFrames, maps: np.ndarray | None, fps: float) -> None:
        for i in range(len(s)):
            f = s.first + i
            self.csv.writerow(
                [f + 1, f"{f / fps:.3f}", f"{s.score[i]:.4f}", int(s.anomalous[i]), *(f"{v:.4f}" for v in s.z[i])]
            )
        if self.h5 is not None:
            if maps is not None:  # steps of 1/32 of the normal level: 5x smaller files, invisible in a heatmap
                maps = np.round(maps * MAP_STEPS) / MAP_STEPS
            values = {
                "maps": maps, "region_errors": s.region_errors, "region_z": s.z, "score": s.score, "anomalous": s.anomalous,
                "reconstructions": np.round(s.reconstructions * 255.0).astype(np.uint8),
            }  # fmt: skip
            for name, ds in self.ds.items():
                n = ds.shape[0]
                ds.resize(n + len(s), axis=0)
                ds[n:] = values[name]
