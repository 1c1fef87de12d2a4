"""Stage 4, score: one new clip through the fitted ensemble, in memory, frame chunk by chunk.

Writes ``scores.csv``, ``events.csv`` and ``maps.h5`` into ``out_path`` (see
``pipeline.scoring.outputs``); the scoring itself is ``pipeline.scoring.session``'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cuboid_ad.core.artifacts import new_folder
from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import InputError
from cuboid_ad.core.frames import measured_fps
from cuboid_ad.core.progress import progress
from cuboid_ad.ensemble.ensemble import Ensemble, ScoredFrames
from cuboid_ad.ensemble.events import Event
from cuboid_ad.pipeline.media.decode import open_clip, output_fps, read_frames, working_size
from cuboid_ad.pipeline.media.threads import Background, prefetch
from cuboid_ad.pipeline.scoring.outputs import ScoreFiles
from cuboid_ad.pipeline.scoring.session import open_session

log = logging.getLogger(__name__)


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
    events: list[Event]  # the anomaly events
    seconds: float
    out_path: Path | None = None
    files: list[Path] = field(default_factory=list)
    stream_z: np.ndarray | None = None  # (n_frames, R, S): each region's z of every stream (ensemble.ensemble.ScoredFrames)
    streams: list[str] = field(default_factory=list)  # the streams' names, in stream_z's order
    tampers: list[Event] = field(default_factory=list)  # the tamper events: the camera covered, blurred, moved, shaking
    tamper: np.ndarray | None = None  # (n_frames,) object: each frame's tamper condition or ""

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
    session = open_session(ens, models_path, fps, device, src.codec)
    parts: list[ScoredFrames] = []
    with ExitStack() as stack:
        files = None
        if out_path:
            stack.enter_context(new_folder(out_path))
            files = ScoreFiles(stack, Path(out_path), ens, src.path, stream, fps, maps, session.classifier is not None)
        bar = stack.enter_context(progress(total=src.n_frames_estimate or None, desc=f"score {src.path.name}", unit="frame"))
        # decoding and preparing tubes (optical flow included) run ahead in one helper thread,
        # maps and writing trail in another
        background = stack.enter_context(Background())

        def collect(scored: ScoredFrames) -> None:
            if not len(scored):
                return
            # keep only the small per-frame arrays; cell scores and reconstructions go to disk or away
            # (copies: a view, even an empty one, would keep the whole chunk's arrays alive)
            parts.append(ScoredFrames(scored.first, scored.cell_z[:0].copy(), scored.region_z.copy(), scored.score.copy(), scored.anomalous.copy(),
                                      scored.reconstructions[:0].copy(), stream_z=scored.stream_z.copy(), times=scored.times.copy(),
                                      tamper=scored.tamper.copy()))  # fmt: skip
            session.track(scored)
            if files:
                background.submit(lambda: files.write(scored, session.anomaly_maps(scored) if maps else None))

        decoded = read_frames(src, cfg.extract, chunk_frames, allow_damaged, with_times=True)
        for frames, stamps, prepared in prefetch((frames, stamps, session.prepare(frames)) for frames, stamps in decoded):
            collect(session.score(prepared, stamps))
            bar.update(len(frames))
            on_frames(len(frames))
        try:
            collect(session.flush())
        except InputError as exc:
            raise InputError(f"{src.path.name}: {exc}") from None
        session.finish()
        background.close()
        if files:
            files.write_events(session.events.done + session.tampers.done)
    R, S = len(ens.regions), len(ens.stream_names)
    times_s = np.concatenate([p.times for p in parts]) if parts else np.zeros(0)
    result = ScoreResult(
        source=src.path,
        fps=measured_fps(times_s, fps),
        region_ids=ens.region_ids,
        times=times_s,
        score=np.concatenate([p.score for p in parts]) if parts else np.zeros(0),
        anomalous=np.concatenate([p.anomalous for p in parts]) if parts else np.zeros(0, bool),
        region_z=np.concatenate([p.region_z for p in parts]) if parts else np.zeros((0, R)),
        stream_z=np.concatenate([p.stream_z for p in parts]) if parts else np.zeros((0, R, S)),
        streams=ens.stream_names,
        threshold=ens.threshold_,
        events=list(session.events.done),
        tampers=list(session.tampers.done),
        tamper=np.concatenate([p.tamper for p in parts]) if parts else np.zeros(0, object),
        seconds=time.perf_counter() - t0,
        out_path=Path(out_path) if out_path else None,
        files=files.files if files else [],
    )
    log.info("scored %s: %d frames in %.1f s (%.1f fps)", src.path.name, result.n_frames, result.seconds, result.n_frames / result.seconds)
    return result
