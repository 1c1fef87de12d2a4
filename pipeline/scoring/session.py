"""One scoring session: decoded frames in, per-frame scores, anomaly maps and events out.

Every way of scoring goes through it, so that a file, a folder of files, an
upload and a live camera give the same scores for the same frames: ``score``,
``evaluate`` and ``fleet`` (files, through ``pipeline.stages.score``), ``serve``
(uploads, through the report) and ``watch`` (a live stream).

A chunk of frames is first *prepared* (each region's tube cut from the frames,
optical flow included, and the supervised classifier's vote when
``score.classifier_weight`` fuses it): this may run ahead in a helper thread,
in frame order; so may the tamper check (``pipeline.scoring.tamper``: is the
view itself covered, blurred, moved or shaking?). It is then *scored* by the
ensemble: the frames come back once no later window can change them (at most
one window later), with their own times, the vote in their score, and their
tamper condition; a frame whose view is tampered with, or whose windows still
hold such frames, is never flagged as anomalous. *Tracking* turns flagged
frames into anomaly events with the models' event rule (``score.min_event_seconds``,
``score.event_gap_seconds``; none only inside a stream's first :data:`SETTLE_SECONDS`), and tampered stretches
into tamper events.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cuboid_ad.core.config import Config, config_differences
from cuboid_ad.core.errors import ArtifactError
from cuboid_ad.core.workdir import WorkDir
from cuboid_ad.cuboids.slicing import TubeCutter
from cuboid_ad.ensemble.anomaly_map import AnomalyMapper
from cuboid_ad.ensemble.ensemble import Ensemble, ScoredFrames
from cuboid_ad.ensemble.events import Event, EventTracker
from cuboid_ad.ensemble.fusion import fuse_classifier
from cuboid_ad.ensemble.supervised import ClassifierStream, load_classifier
from cuboid_ad.pipeline.scoring.tamper import KINDS as TAMPER_KINDS
from cuboid_ad.pipeline.scoring.tamper import TAMPER_SECONDS, TamperCheck, read_scene

# a stream's first seconds, from its first frame (and again after a live source reconnects): flagged frames all
# inside them raise no event, those that go on past them one event from its first frame. The camera corrections read
# a stream's noise from its frames as they come (cuboids.camera.Denoiser): a lossy night stream's encoder keeps more
# of the grain for about its first second, then floods the flow with it until the night filter turns on
# (docs/experiments.md)
# The same seconds before and after a frame at which still ground's flow turned the night filter on
# (TubeCutter.calmed): a lossy dusk or night stream's remnant floods the flow until then, and for the filter's first
# second or two after (docs/experiments.md)
SETTLE_SECONDS = 2.0


def fusion_classifier(classifier_path: Path, cfg: Config, device: str) -> ClassifierStream:
    """The classifier (``WORK/classifier/model.pt``) whose vote ``score.classifier_weight`` fuses: it must read frames as the models do."""
    ck, model = load_classifier(classifier_path, device=device)
    diffs = config_differences(ck["cfg"], cfg, ("extract",))
    if diffs:
        raise ArtifactError(f"{classifier_path}: trained on frames decoded otherwise than the models' ({'; '.join(diffs)}); run `supervise` again")
    return ClassifierStream(model, ck["cfg"].supervise.window_frames, tuple(ck["input_size"]), device)


@dataclass(frozen=True)
class Prepared:
    """A chunk of frames made ready for the models."""

    tubes: np.ndarray  # (R, n, C, P, P) uint8: each region's tube
    p_odd: np.ndarray | None  # (n,) the classifier's p(not normal), when its vote is fused
    tamper: np.ndarray  # (n,) object: each frame's tamper condition (pipeline.scoring.tamper.KINDS) or ""
    calmed: np.ndarray | None = None  # (n,) bool: where still ground's flow turned the night filter on (TubeCutter.calmed)


class _Trailing:
    """Per-frame values of the prepared frames (their times, the classifier's vote), handed out again as the
    scored frames, which trail them, come out."""

    def __init__(self) -> None:
        self.pending: list[np.ndarray] = []

    def push(self, values: np.ndarray) -> None:
        self.pending.append(np.asarray(values))

    def take(self, n: int) -> np.ndarray:
        have = np.concatenate(self.pending) if len(self.pending) > 1 else (self.pending[0] if self.pending else np.zeros(0))
        out, rest = have[:n], have[n:]
        self.pending = [rest] if len(rest) else []
        return out


class ScoringSession:
    """The scoring chain of one source: tubes, the ensemble's sliding windows, the classifier's vote, events.

    ``fps``: the nominal rate, until the frames' own times say otherwise (:meth:`set_fps`).
    ``classifier``: the supervised classifier whose vote joins the frame score (``score.classifier_weight``).
    """

    def __init__(self, ens: Ensemble, fps: float, classifier: ClassifierStream | None = None, tamper: TamperCheck | None = None, codec: str = ""):
        self.ens, self.cfg = ens, ens.cfg
        self.classifier, self.tamper_check = classifier, tamper
        s = self.cfg.score
        self.events = EventTracker(ens.region_ids, ens.threshold_, s.min_event_seconds, s.event_gap_seconds, 1.0 / fps)
        self.tampers = EventTracker(list(TAMPER_KINDS), 0.5, TAMPER_SECONDS, TAMPER_SECONDS, 1.0 / fps, kind="tamper")
        # frames after a tampered one whose windows and smoothing may still hold it
        self.grace = self.cfg.cuboids.clip_length_in_frames + s.smoothing_frames + s.persistence_frames - 1
        self.since_tamper = self.grace
        self.mapper = AnomalyMapper(ens.regions, ens.frame_size)
        self.codec = codec  # the stream's video codec as ffmpeg names it (see restart)
        self.restart()

    def restart(self, codec: str | None = None) -> None:
        """Start a new stream of frames (a live source reconnected): tubes, windows and the classifier's window afresh.
        The events go on: an event open before the break may go on after it. ``codec``: the new stream's video codec as
        ffmpeg names it, which tells the tube cutter whether a lossy remnant can last (:func:`core.frames.inter_frame`);
        None keeps the last one's."""
        if codec is not None:
            self.codec = codec
        self.cut = TubeCutter.for_config(self.ens.regions, self.cfg, self.codec)
        self.scorer = self.ens.scorer()
        self.times, self.votes, self.conditions = _Trailing(), _Trailing(), _Trailing()
        if self.classifier is not None:
            self.classifier.reset()
        self.settled = False  # whether the stream's settling seconds are known (from its first frame's time)

    def set_fps(self, fps: float) -> None:
        """How long a frame lasts for the event rules, as the frames' times measure it."""
        self.events.frame_seconds = self.tampers.frame_seconds = 1.0 / fps

    def prepare(self, frames: np.ndarray) -> Prepared:
        """Decoded frames ``(n, H, W, C)`` uint8 -> their tubes, vote and tamper condition; call in frame order (any one thread)."""
        p_odd = None if self.classifier is None else 1.0 - self.classifier.push(frames)[0][:, 0]
        tubes = self.cut(frames)
        tamper = np.full(len(frames), "", dtype=object)
        if self.tamper_check is not None:
            tamper = self.tamper_check(frames, None if self.cut.stabilizer is None else self.cut.stabilizer.motions)
        return Prepared(tubes, p_odd, tamper, self.cut.calmed if self.cut.content == "flow" else None)

    def score(self, prepared: Prepared, times: np.ndarray) -> ScoredFrames:
        """Prepared frames and their times ``(n,)`` -> the frames now final (maybe none), with their times."""
        if not self.settled and len(times):
            self.events.settling.append((float(times[0]), float(times[0]) + SETTLE_SECONDS))
            self.settled = True
        if prepared.calmed is not None:
            for t in times[prepared.calmed]:
                self.events.settling.append((float(t) - SETTLE_SECONDS, float(t) + SETTLE_SECONDS))
        self.times.push(times)
        self.conditions.push(prepared.tamper)
        if prepared.p_odd is not None:
            self.votes.push(prepared.p_odd)
        return self._post(self.scorer.push(prepared.tubes))

    def flush(self) -> ScoredFrames:
        """The last frames of the stream, which no full window reached; InputError if it held less than one window."""
        return self._post(self.scorer.finish())

    def track(self, scored: ScoredFrames) -> list[Event]:
        """Feed scored frames to the event rules; returns the events now over (anomaly and tamper events)."""
        done = self.events.push(scored.anomalous, scored.score, scored.region_z, scored.times)
        tampered = scored.tamper != ""
        kinds = np.array([[k == kind for kind in TAMPER_KINDS] for k in scored.tamper], dtype=np.float64).reshape(len(scored), len(TAMPER_KINDS))
        return done + self.tampers.push(tampered, tampered.astype(np.float64), kinds, scored.times)

    def finish(self) -> list[Event]:
        """The end of the source: the events still open end; returns those that count."""
        return self.events.finish() + self.tampers.finish()

    def anomaly_maps(self, scored: ScoredFrames) -> np.ndarray:
        """Scored frames' anomaly maps ``(n, H, W)``: every cell's z placed in the frame."""
        n, R, _ = scored.cell_z.shape
        g = self.ens.grid_cells
        return self.mapper(scored.cell_z.reshape(n, R, g, g))

    def _post(self, scored: ScoredFrames) -> ScoredFrames:
        n = len(scored)
        scored = replace(scored, times=self.times.take(n), tamper=self.conditions.take(n).astype(object))
        if self.classifier is not None and n:
            p = self.votes.take(n)
            score = fuse_classifier(scored.score, p, self.ens.threshold_, self.cfg.score.classifier_weight)
            scored = replace(scored, score=score, anomalous=score > self.ens.threshold_, p_anomalous=p)
        return replace(scored, anomalous=scored.anomalous & self._trusted(scored.tamper))

    def _trusted(self, tamper: np.ndarray) -> np.ndarray:
        """Which frames may be flagged: neither tampered with nor within a window's and a smoothing's reach of one."""
        out = np.ones(len(tamper), bool)
        for i, kind in enumerate(tamper):
            self.since_tamper = 0 if kind else self.since_tamper + 1
            out[i] = self.since_tamper > self.grace
        return out


def open_session(ens: Ensemble, models_path: str | Path, fps: float, device: str, codec: str = "") -> ScoringSession:
    """A scoring session of the models in ``models_path``: with the work folder's classifier when ``score.classifier_weight``
    fuses it, and the tamper check when the models know their camera's normal view (``scene.h5``: models trained before it
    existed have none). ``codec``: the source's video codec as ffmpeg names it (see :meth:`ScoringSession.restart`)."""
    classifier = None
    if ens.cfg.score.classifier_weight > 0:
        classifier = fusion_classifier(WorkDir(Path(models_path).parent).classifier / "model.pt", ens.cfg, device)
    scene = Path(models_path) / "scene.h5"
    tamper = TamperCheck(read_scene(scene, ens.cfg), fps) if scene.exists() else None
    return ScoringSession(ens, fps, classifier, tamper, codec)
