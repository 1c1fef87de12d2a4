"""Stage 4, score: one new clip through the fitted ensemble, in memory, frame chunk by chunk.

Outputs in ``out_path``:

``scores.csv``
    one row per decoded frame: ``frame`` (1-based), ``time_s`` (the frame's own
    timestamp, seconds since the first frame), ``score`` (the
    largest region score), ``anomalous`` (0/1: the score is above the alarm
    threshold), then one column per region id holding that region's score (its
    largest cell z, see ``ensemble.fusion``); with ``score.classifier_weight`` set, the
    score and flag include the supervised classifier's vote and a last column
    ``p_anomalous`` holds it (``ensemble.fusion.fuse_classifier``).
``events.csv``
    one row per event (``ensemble.events``): ``event``, ``first_frame``,
    ``last_frame`` (1-based, inclusive), ``start_s``, ``end_s``, ``peak_frame``,
    ``peak_s``, ``peak_score``, ``regions`` (those above the threshold, strongest first).
``maps.h5`` (unless ``maps=False``)
    ``maps`` float16 (n_frames, height, width): the anomaly map, every cell's z placed
    in the frame (overlapping regions averaged), in steps of 1/8; ``region_z``
    (n_frames, n_regions); ``score``, ``anomalous``, ``time_s`` (n_frames,); ``reconstructions``
    uint8 (n_frames, n_regions, P, P): what each region's model rebuilt, as
    ``ensemble.detector.shown_reconstruction`` draws it, times 255; attributes:
    config, source and video stream, nominal fps, region ids and boxes, the alarm threshold.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np

from core.artifacts import atomic_path, new_folder, stamp
from core.config import Config
from core.errors import ArtifactError, InputError
from core.progress import progress
from cuboids.slicing import TubeCutter
from ensemble.anomaly_map import AnomalyMapper
from ensemble.ensemble import Ensemble, ScoredFrames
from ensemble.events import Event, EventTracker
from ensemble.fusion import fuse_classifier
from ensemble.supervised import ClassifierStream
from pipeline.background import Background, prefetch
from pipeline.ffmpeg_io import measured_fps, open_clip, output_fps, read_frames, working_size

log = logging.getLogger(__name__)

MAP_STEPS = 8  # maps.h5 stores anomaly maps rounded to 1/MAP_STEPS of a z unit


def event_tracker(ens: Ensemble, fps: float) -> EventTracker:
    """The event rule of the models' config (``score.min_event_seconds``, ``score.event_gap_seconds``), frames lasting 1 / ``fps``."""
    s = ens.cfg.score
    return EventTracker(ens.region_ids, ens.threshold_, s.min_event_seconds, s.event_gap_seconds, 1.0 / fps)


@dataclass
class ScoreResult:
    source: Path
    fps: float  # as the frames' timestamps show it
    region_ids: list[str]
    times: np.ndarray  # (n_frames,) seconds since the first frame, from the frames' timestamps
    score: np.ndarray  # (n_frames,)
    anomalous: np.ndarray  # (n_frames,) bool
    region_z: np.ndarray  # (n_frames, R)
    threshold: float
    events: list[Event]
    seconds: float
    out_path: Path | None = None
    files: list[Path] = field(default_factory=list)
    stream_z: np.ndarray | None = None  # (n_frames, R, 2): each region's reconstruction and novelty z (ensemble.ensemble.ScoredFrames)

    @property
    def n_frames(self) -> int:
        return len(self.score)

    @property
    def duration(self) -> float:
        """Seconds of video: from the first frame to the end of the last (one frame at the measured rate)."""
        return float(self.times[-1]) + 1.0 / self.fps if self.n_frames else 0.0


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
    stream: int = 0,
    on_frames: Callable[[int], object] = lambda n: None,
) -> ScoreResult:
    """Score every frame of a clip (video file or frame folder) with the models in ``models_path``.

    ``cfg``, when given, must match the models' config. With ``out_path`` None
    nothing is written (the result is returned only). ``stream``: which of the
    file's video streams (0 = the first). ``on_frames(n)`` is called as each chunk of n
    frames has been decoded (a web page's progress).
    """
    t0 = time.perf_counter()
    ens = ensemble or Ensemble.load(models_path, cfg, device)
    cfg = ens.cfg
    src = open_clip(video_path, cfg.extract, stream)
    width, height = working_size(src, cfg.extract)
    if (height, width) != tuple(ens.frame_size):
        raise InputError(
            f"{src.path}: decodes to {width}x{height} frames but the models were trained on "
            f"{ens.frame_size[1]}x{ens.frame_size[0]}; set extract.frame_width or use footage of the same camera"
        )
    fps = output_fps(src, cfg.extract)
    cut = TubeCutter.for_config(ens.regions, cfg)
    scorer = ens.scorer()
    events = event_tracker(ens, fps)
    clf = fusion_classifier(Path(models_path).parent, cfg, device) if cfg.score.classifier_weight > 0 else None
    p_odd = _Trailing()
    mapper = AnomalyMapper(ens.regions, ens.frame_size) if maps and out_path else None
    R = len(ens.regions)
    parts: list[ScoredFrames] = []
    times = _Trailing()
    with ExitStack() as stack:
        if out_path:
            stack.enter_context(new_folder(out_path))
        writer = _Writers(stack, Path(out_path), cfg, ens, src.path, stream, fps, mapper is not None, clf is not None) if out_path else None
        fuse = (lambda s: fuse_vote(s, p_odd.take(len(s)), ens.threshold_, cfg.score.classifier_weight)) if clf else None
        bar = stack.enter_context(progress(total=src.n_frames_estimate or None, desc=f"score {src.path.name}", unit="frame"))
        # decoding and cutting tubes (optical flow included) run ahead in one helper
        # thread, maps and writing trail in another
        background = stack.enter_context(Background())
        decoded = read_frames(src, cfg.extract, chunk_frames, allow_damaged, with_times=True)
        vote = (lambda frames: 1.0 - clf.push(frames)[0][:, 0]) if clf else (lambda frames: None)
        for frames, stamps, tubes, p in prefetch((frames, stamps, cut(frames), vote(frames)) for frames, stamps in decoded):
            times.push(stamps)
            if clf:
                p_odd.push(p)
            scored = scorer.push(tubes)
            bar.update(len(frames))
            on_frames(len(frames))
            _collect(scored, parts, times, events, writer, mapper, ens.grid_cells, background, fuse)
        try:
            last = scorer.finish()
        except InputError as exc:
            raise InputError(f"{src.path.name}: {exc}") from None
        _collect(last, parts, times, events, writer, mapper, ens.grid_cells, background, fuse)
        events.finish()
        background.close()
        if writer:
            writer.write_events(events.done)
        files = writer.files if writer else []
    times_s = times.all()
    result = ScoreResult(
        source=src.path,
        fps=measured_fps(times_s, fps),
        region_ids=ens.region_ids,
        times=times_s,
        score=np.concatenate([p.score for p in parts]) if parts else np.zeros(0),
        anomalous=np.concatenate([p.anomalous for p in parts]) if parts else np.zeros(0, bool),
        region_z=np.concatenate([p.region_z for p in parts]) if parts else np.zeros((0, R)),
        stream_z=np.concatenate([p.stream_z for p in parts]) if parts else np.zeros((0, R, 2)),
        threshold=ens.threshold_,
        events=list(events.done),
        seconds=time.perf_counter() - t0,
        out_path=Path(out_path) if out_path else None,
        files=files,
    )
    log.info("scored %s: %d frames in %.1f s (%.1f fps)", src.path.name, result.n_frames, result.seconds, result.n_frames / result.seconds)
    return result


class _Trailing:
    """Per-frame values of the decoded frames (their times, the classifier's vote), handed out again as the scored frames (which trail them) come out."""

    def __init__(self):
        self.pending: list[np.ndarray] = []
        self.taken: list[np.ndarray] = []

    def push(self, stamps: np.ndarray) -> None:
        self.pending.append(stamps)

    def take(self, n: int) -> np.ndarray:
        have = np.concatenate(self.pending) if len(self.pending) > 1 else (self.pending[0] if self.pending else np.zeros(0))
        out, rest = have[:n], have[n:]
        self.pending = [rest] if len(rest) else []
        self.taken.append(out)
        return out

    def all(self) -> np.ndarray:
        return np.concatenate(self.taken) if self.taken else np.zeros(0)


def fusion_classifier(work_path: Path, cfg: Config, device: str) -> ClassifierStream:
    """The classifier of the work folder, for ``score.classifier_weight``: it must read frames as the models do."""
    from core.config import config_differences
    from pipeline.supervise import classifier_path, load_classifier

    ck, model = load_classifier(work_path, device=device)
    diffs = config_differences(ck["cfg"], cfg, ("extract",))
    if diffs:
        raise ArtifactError(f"{classifier_path(work_path)}: trained on frames decoded otherwise than the models' ({'; '.join(diffs)}); run `supervise` again")
    return ClassifierStream(model, ck["cfg"].supervise.window_frames, tuple(ck["input_size"]), device)


def fuse_vote(s: ScoredFrames, p: np.ndarray, threshold: float, weight: float) -> ScoredFrames:
    """Scored frames with the classifier's vote in their score and flag (``score.classifier_weight``); ``p``: p(not normal)."""
    score = fuse_classifier(s.score, p, threshold, weight)
    return replace(s, score=score, anomalous=score > threshold, p_anomalous=p)


def _collect(
    scored: ScoredFrames, parts: list[ScoredFrames], times: _Trailing, events: EventTracker, writer, mapper, g: int, background: Background, fuse=None
) -> None:
    """Keep a chunk of scored frames' small arrays, feed the events, hand the rest to the writer (``fuse``: add the classifier's vote first)."""
    if not len(scored):
        return
    if fuse is not None:
        scored = fuse(scored)
    # keep only the small per-frame arrays; cell scores and reconstructions go to disk or away
    # (copies: a view, even an empty one, would keep the whole chunk's arrays alive)
    parts.append(ScoredFrames(scored.first, scored.cell_z[:0].copy(), scored.region_z.copy(), scored.score.copy(), scored.anomalous.copy(),
                              scored.reconstructions[:0].copy(), stream_z=scored.stream_z.copy()))  # fmt: skip
    stamps = times.take(len(scored))
    events.push(scored.anomalous, scored.score, scored.region_z, stamps)
    if writer:
        n, R, _ = scored.cell_z.shape
        background.submit(lambda: writer.write(scored, mapper(scored.cell_z.reshape(n, R, g, g)) if mapper else None, stamps))


class _Writers:
    """scores.csv and maps.h5 written row by row to temporary names, renamed when the clip is done; events.csv at the end."""

    def __init__(self, stack: ExitStack, out_path: Path, cfg: Config, ens: Ensemble, source: Path, stream: int, fps: float, with_maps: bool,
                 with_classifier: bool = False):  # fmt: skip
        self.out_path = out_path
        self.with_classifier = with_classifier
        self.region_ids = ens.region_ids
        self.files = [out_path / "scores.csv"]
        tmp_csv = stack.enter_context(atomic_path(self.files[0]))
        self.csv_file = stack.enter_context(open(tmp_csv, "w", newline="", encoding="utf-8"))
        self.csv = csv.writer(self.csv_file)
        self.csv.writerow(["frame", "time_s", "score", "anomalous", *ens.region_ids, *(["p_anomalous"] if with_classifier else [])])
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
                "region_z": self.h5.create_dataset("region_z", (0, R), np.float32, maxshape=(None, R), chunks=(256, R)),
                "stream_z": self.h5.create_dataset("stream_z", (0, R, 2), np.float32, maxshape=(None, R, 2), chunks=(256, R, 2)),
                "score": self.h5.create_dataset("score", (0,), np.float32, maxshape=(None,), chunks=(1024,)),
                "anomalous": self.h5.create_dataset("anomalous", (0,), np.uint8, maxshape=(None,), chunks=(1024,)),
                "time_s": self.h5.create_dataset("time_s", (0,), np.float64, maxshape=(None,), chunks=(1024,)),
                "reconstructions": self.h5.create_dataset(
                    "reconstructions", (0, R, P, P), np.uint8, maxshape=(None, R, P, P), chunks=(16, R, P, P), compression="gzip",
                    compression_opts=1, rdcc_nbytes=0,
                ),
            }  # fmt: skip
            stamp(
                self.h5.attrs,
                "maps",
                cfg,
                source_path=str(source.resolve()),
                stream=stream,
                fps=fps,
                region_ids=json.dumps(ens.region_ids),
                boxes=np.array([[r.top, r.left, r.height, r.width] for r in ens.regions]),
                threshold=ens.threshold_,
            )

    def write(self, s: ScoredFrames, maps: np.ndarray | None, times: np.ndarray) -> None:
        for i in range(len(s)):
            f = s.first + i
            extra = [f"{s.p_anomalous[i]:.4f}"] if self.with_classifier else []
            self.csv.writerow([f + 1, f"{times[i]:.3f}", f"{s.score[i]:.4f}", int(s.anomalous[i]), *(f"{v:.4f}" for v in s.region_z[i]), *extra])
        if self.h5 is not None:
            if maps is not None:  # steps of 1/8 of a z unit: smaller files, invisible in a heatmap
                maps = np.round(maps * MAP_STEPS) / MAP_STEPS
            values = {
                "maps": maps, "region_z": s.region_z, "stream_z": s.stream_z, "score": s.score, "anomalous": s.anomalous, "time_s": times,
                "reconstructions": np.round(s.reconstructions * 255.0).astype(np.uint8),
            }  # fmt: skip
            for name, ds in self.ds.items():
                n = ds.shape[0]
                ds.resize(n + len(s), axis=0)
                ds[n:] = values[name]

    def write_events(self, events: list[Event]) -> None:
        path = self.out_path / "events.csv"
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["event", "first_frame", "last_frame", "start_s", "end_s", "peak_frame", "peak_s", "peak_score", "regions"])
            for k, e in enumerate(events, 1):
                w.writerow([k, e.first + 1, e.last + 1, f"{e.start_s:.3f}", f"{e.end_s:.3f}", e.peak_frame + 1,
                            f"{e.peak_s:.3f}", f"{e.peak_score:.4f}", " ".join(e.regions)])  # fmt: skip
        self.files.append(path)
