"""One scoring session: decoded frames in, per-frame scores, anomaly maps and events out.

Every way of scoring goes through it, so that a file, a folder of files, an
upload and a live camera give the same scores for the same frames: ``score``,
``evaluate`` and ``fleet`` (files, through ``pipeline.stages.score``), ``serve``
(uploads, through the report) and ``watch`` (a live stream).

A chunk of frames is first *prepared* (each region's tube cut from the frames,
optical flow included, and the supervised classifier's vote when
``score.classifier_weight`` fuses it): this may run ahead in a helper thread,
in frame order. It is then *scored* by the ensemble: the frames come back once
no later window can change them (at most one window later), with their own
times and the vote in their score. *Tracking* turns flagged frames into events
with the models' event rule (``score.min_event_seconds``, ``score.event_gap_seconds``).
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

    def __init__(self, ens: Ensemble, fps: float, classifier: ClassifierStream | None = None):
        self.ens, self.cfg = ens, ens.cfg
        self.classifier = classifier
        s = self.cfg.score
        self.events = EventTracker(ens.region_ids, ens.threshold_, s.min_event_seconds, s.event_gap_seconds, 1.0 / fps)
        self.mapper = AnomalyMapper(ens.regions, ens.frame_size)
        self.restart()

    def restart(self) -> None:
        """Start a new stream of frames (a live source reconnected): tubes, windows and the classifier's window afresh.
        The events go on: an event open before the break may go on after it."""
        self.cut = TubeCutter.for_config(self.ens.regions, self.cfg)
        self.scorer = self.ens.scorer()
        self.times, self.votes = _Trailing(), _Trailing()
        if self.classifier is not None:
            self.classifier.reset()

    def set_fps(self, fps: float) -> None:
        """How long a frame lasts for the event rule, as the frames' times measure it."""
        self.events.frame_seconds = 1.0 / fps

    def prepare(self, frames: np.ndarray) -> Prepared:
        """Decoded frames ``(n, H, W, C)`` uint8 -> their tubes and vote; call in frame order (any one thread)."""
        p_odd = None if self.classifier is None else 1.0 - self.classifier.push(frames)[0][:, 0]
        return Prepared(self.cut(frames), p_odd)

    def score(self, prepared: Prepared, times: np.ndarray) -> ScoredFrames:
        """Prepared frames and their times ``(n,)`` -> the frames now final (maybe none), with their times."""
        self.times.push(times)
        if prepared.p_odd is not None:
            self.votes.push(prepared.p_odd)
        return self._post(self.scorer.push(prepared.tubes))

    def flush(self) -> ScoredFrames:
        """The last frames of the stream, which no full window reached; InputError if it held less than one window."""
        return self._post(self.scorer.finish())

    def track(self, scored: ScoredFrames) -> list[Event]:
        """Feed scored frames to the event rule; returns the events now over."""
        return self.events.push(scored.anomalous, scored.score, scored.region_z, scored.times)

    def finish(self) -> list[Event]:
        """The end of the source: the event still open ends; returns it if it counts."""
        return self.events.finish()

    def anomaly_maps(self, scored: ScoredFrames) -> np.ndarray:
        """Scored frames' anomaly maps ``(n, H, W)``: every cell's z placed in the frame."""
        n, R, _ = scored.cell_z.shape
        g = self.ens.grid_cells
        return self.mapper(scored.cell_z.reshape(n, R, g, g))

    def _post(self, scored: ScoredFrames) -> ScoredFrames:
        scored = replace(scored, times=self.times.take(len(scored)))
        if self.classifier is None or not len(scored):
            return scored
        p = self.votes.take(len(scored))
        score = fuse_classifier(scored.score, p, self.ens.threshold_, self.cfg.score.classifier_weight)
        return replace(scored, score=score, anomalous=score > self.ens.threshold_, p_anomalous=p)


def open_session(ens: Ensemble, models_path: str | Path, fps: float, device: str) -> ScoringSession:
    """A scoring session of the models in ``models_path``, with the work folder's classifier when ``score.classifier_weight`` fuses it."""
    classifier = None
    if ens.cfg.score.classifier_weight > 0:
        classifier = fusion_classifier(WorkDir(Path(models_path).parent).classifier / "model.pt", ens.cfg, device)
    return ScoringSession(ens, fps, classifier)
