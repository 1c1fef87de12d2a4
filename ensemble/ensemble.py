"""The fitted ensemble: every region's detector, its manifest, and the scoring pass over region tubes.

Files (``models/``)::

    <region_id>.pt   one checkpoint per region (see ensemble.detector)
    manifest.json    format, config, grid and frame size, the alarm threshold,
                     each region's own threshold, training clips, checkpoint files

The alarm threshold is the frame score (the largest region score) that a share
``score.false_alarm_rate`` of the held-out normal frames exceed: blocks of the
training clips that no model was fitted on, the same frames for every region.

:class:`EnsembleScorer` is the whole scoring chain after the tubes: sliding
windows through every region's model -> per-frame maps of every stream (``ensemble.streams``)
and the reconstruction as shown -> cell values -> each stream's causally smoothed z -> region and
frame scores (``ensemble.fusion``). It knows nothing of videos: the scoring session cuts frames
into tubes and feeds it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cuboid_ad.core.artifacts import KINDS, read_json, require_config, stamp_dict, write_json
from cuboid_ad.core.config import Config, ScoreConfig
from cuboid_ad.core.errors import ArtifactError
from cuboid_ad.core.grid import Region
from cuboid_ad.ensemble.alarms import AlarmRate
from cuboid_ad.ensemble.detector import RegionDetector
from cuboid_ad.ensemble.fusion import ScoreChain, alarm_threshold, cell_means
from cuboid_ad.ensemble.sliding import SlidingWindowScorer
from cuboid_ad.ensemble.streams.base import CellStats, Stream


@dataclass(frozen=True)
class Ensemble:
    """All regions' fitted detectors, in grid order, with their statistics as arrays."""

    cfg: Config
    frame_size: tuple[int, int]  # (height, width)
    detectors: list[RegionDetector]
    manifest: dict[str, Any]
    threshold_: float  # the alarm threshold on frame scores

    @classmethod
    def load(cls, models_path: str | Path, cfg: Config | None = None, device: str = "cpu", manifest_path: str | Path | None = None) -> "Ensemble":
        """Load ``models_path/manifest.json`` (or ``manifest_path``: another version's) and every checkpoint it names;
        with ``cfg``, refuse other settings."""
        models_path = Path(models_path)
        path = Path(manifest_path) if manifest_path else models_path / "manifest.json"
        if not path.exists():
            raise ArtifactError(f"{path}: missing; run `train` first")
        manifest = read_json(path)
        kind = KINDS["manifest"]
        if not isinstance(manifest, dict) or manifest.get("format") != kind.tag or manifest.get("format_version") != kind.version:
            raise ArtifactError(f"{path}: not a cuboid-ad manifest of version {kind.version}")
        recorded = Config.from_record(manifest["config"], source=str(path))
        if cfg is not None:
            require_config("manifest", recorded, cfg, path, "score with the config the models were trained with, or re-run `train`")
        detectors = []
        for entry in manifest["regions"]:
            name = entry["checkpoint"]
            if Path(name).name != name or not name.endswith(".pt"):
                raise ArtifactError(f"{path}: checkpoint name {name!r} points outside the models folder")
            detectors.append(RegionDetector.load(models_path / name, recorded, device))
        if [d.region.region_id for d in detectors] != recorded.cuboids.region_ids:
            raise ArtifactError(f"{path}: regions do not match the recorded grid")
        return cls(recorded, tuple(manifest["frame_size"]), detectors, manifest, float(manifest["threshold"]))

    @property
    def version(self) -> int:
        """0: the models as trained; k: the k-th version made by operator feedback (``pipeline.stages.feedback``)."""
        return int(self.manifest.get("version", 0))

    @property
    def regions(self) -> list[Region]:
        return [d.region for d in self.detectors]

    @property
    def region_ids(self) -> list[str]:
        return [r.region_id for r in self.regions]

    @property
    def grid_cells(self) -> int:
        """Cells per region side: the cell scores of a region form a grid_cells x grid_cells grid."""
        return self.cfg.cuboids.patch_size // self.cfg.score.cell_size

    @property
    def needs_previous(self) -> bool:
        return self.cfg.needs_previous

    @property
    def streams(self) -> list[Stream]:
        """The streams every region's score weighs, in order (``score.streams``)."""
        return [s for s, _ in self.detectors[0].streams]

    @property
    def stream_names(self) -> list[str]:
        return [s.name for s in self.streams]

    def scorer(self, batch_windows: int = 64) -> "EnsembleScorer":
        return EnsembleScorer(self, batch_windows)


MIN_HELD_OUT_MINUTES = 1.0  # held-out normal footage below which train warns that the alarm setting stands on too little


def alarm_setting(detectors: list[RegionDetector], s: ScoreConfig) -> dict[str, Any]:
    """The alarm threshold and what it promises, from the held-out normal frames' scores (``ensemble.alarms``).

    The threshold lets through a share ``score.false_alarm_rate`` of those frames and, with
    ``score.false_events_per_hour`` set, is raised until the estimated false events an hour are no more than that.
    """
    held = np.stack([d.held_out_scores_ for d in detectors]).max(axis=0)
    by_frames = alarm_threshold(held, s.false_alarm_rate)
    rate = AlarmRate.fit(held, detectors[0].held_out_runs_, detectors[0].fps_, s.min_event_seconds, s.event_gap_seconds)
    threshold = max(by_frames, rate.threshold(s.false_events_per_hour)) if s.false_events_per_hour > 0 else by_frames
    estimate = rate.rate(threshold)
    return {
        "threshold": threshold,
        "frame_rate_threshold": by_frames,
        "estimated_false_events_per_hour": estimate,
        "held_out_minutes": rate.hours * 60,
        "reach": rate.reach(max(estimate, 1e-3)),
        "too_little_footage": rate.hours * 60 < MIN_HELD_OUT_MINUTES,
        "tail": rate.to_dict(),
    }


def write_manifest(models_path: Path, cfg: Config, checkpoints: dict[str, str] | None = None, version: int = 0,
                   threshold: float | None = None, **extra: Any) -> Path:  # fmt: skip
    """Summarise the region checkpoints (all must share ``cfg``) into manifest.json, with the alarm threshold.

    ``checkpoints``: region id -> checkpoint file, for a version made by feedback (default: each region's
    ``<region_id>.pt``, the trained ones, version 0); ``threshold``: the alarm threshold to keep (default: set
    from the held-out frames, :func:`alarm_setting`); ``extra``: more keys (what a feedback version absorbed).
    A version above 0 is also kept as ``versions/manifest.v<version>.json``, for ``train --rollback``.
    """
    regions, frame_sizes, clips, detectors = [], set(), None, []
    for rid in cfg.cuboids.region_ids:
        name = (checkpoints or {}).get(rid, f"{rid}.pt")
        det = RegionDetector.load(models_path / name, cfg)
        detectors.append(det)
        r = det.region
        regions.append(
            {
                "region_id": rid, "row": r.row, "col": r.col, "top": r.top, "left": r.left, "height": r.height, "width": r.width,
                "checkpoint": name,
                "threshold": det.threshold_,
                "held_out_max": float(det.held_out_scores_.max()),
                "best_epoch": det.history_.best_epoch,
                "epochs_run": det.history_.epoch + 1,
                "train_seconds": round(det.history_.seconds, 2),
            }
        )  # fmt: skip
        frame_sizes.add(tuple(det.frame_size))
        clips = clips or sorted(det.training_clips_)
    if len(frame_sizes) != 1:
        raise ArtifactError(f"{models_path}: region models were trained on different frame sizes; re-run `train --force`")
    path = models_path / "manifest.json"
    alarms = alarm_setting(detectors, cfg.score)
    if threshold is not None:
        alarms["threshold"] = threshold
    manifest = {
        **stamp_dict("manifest", cfg),
        "config": cfg.to_dict(),
        "grid": {"rows": cfg.cuboids.grid_rows, "cols": cfg.cuboids.grid_cols},
        "frame_size": list(frame_sizes.pop()),
        "threshold": alarms["threshold"],
        "alarms": alarms,
        "n_held_out_frames": int(len(detectors[0].held_out_scores_)),
        "regions": regions,
        "training_clips": clips,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "version": version,
        **extra,
    }
    if version:
        write_json(models_path / "versions" / f"manifest.v{version}.json", manifest)
    write_json(path, manifest)
    return path


@dataclass(frozen=True)
class ScoredFrames:
    """Scores of consecutive frames ``first .. first + n - 1`` (0-based)."""

    first: int
    cell_z: np.ndarray  # (n, R, K): every cell's z
    region_z: np.ndarray  # (n, R): each region's score, its streams' z weighed (score.streams)
    score: np.ndarray  # (n,) frame score: the largest region score
    anomalous: np.ndarray  # (n,) bool: the frame score is above the alarm threshold
    reconstructions: np.ndarray  # (n, R, P, P) in [0, 1], as ensemble.detector.shown_reconstruction draws them
    p_anomalous: np.ndarray | None = None  # (n,) the supervised classifier's vote, when score.classifier_weight fuses it
    # (n, R, S): each region's z of every stream (Ensemble.stream_names), so a user can see which fired;
    # region_z weighs them (ensemble.fusion.ScoreChain)
    stream_z: np.ndarray | None = None
    times: np.ndarray | None = None  # (n,) each frame's own time, seconds (the scoring session sets them)
    tamper: np.ndarray | None = None  # (n,) object: each frame's tamper condition or "" (the scoring session sets them)

    def __len__(self) -> int:
        return len(self.score)

    def rows(self, start: int, stop: int) -> "ScoredFrames":
        """Frames ``first + start .. first + stop - 1`` of these."""
        def cut(a):
            return None if a is None else a[start:stop]

        return ScoredFrames(self.first + start, *(cut(getattr(self, f)) for f in ("cell_z", "region_z", "score", "anomalous", "reconstructions",
                                                                                  "p_anomalous", "stream_z", "times", "tamper")))  # fmt: skip


class EnsembleScorer:
    """The scoring chain for one clip, fed every region's tube chunk by chunk, in frame order."""

    def __init__(self, ensemble: Ensemble, batch_windows: int = 64):
        cfg = ensemble.cfg
        self.cfg = cfg
        first = ensemble.detectors[0]
        self.windows = SlidingWindowScorer(
            [d.window_maps for d in ensemble.detectors],
            first.n_maps,
            cfg.cuboids.clip_length_in_frames,
            cfg.score.frames_between_clips,
            ensemble.needs_previous,
            batch_windows,
        )
        # every stream's statistics of all regions as arrays (R, K)
        stats = [CellStats.stack([d.fitted_[s.name].stats for d in ensemble.detectors]) for s, _ in first.streams]
        self.chain = ScoreChain(first.streams, stats, cfg, [d.absorbed_ for d in ensemble.detectors])
        self.threshold = ensemble.threshold_
        self.n_done = 0

    def push(self, tubes: np.ndarray) -> ScoredFrames:
        """The next frames' region tubes ``(R, n, C, P, P)`` uint8; returns the frames now final."""
        return self._post(self.windows.push(tubes))

    def finish(self) -> ScoredFrames:
        return self._post(self.windows.finish())

    def _post(self, maps: np.ndarray) -> ScoredFrames:
        cells = cell_means(maps, self.cfg.score.cell_size)  # (n, R, n_maps, K)
        cell_z, region_z, stream_z = self.chain(cells)
        score = region_z.max(axis=1)
        out = ScoredFrames(self.n_done, cell_z, region_z, score, score > self.threshold, maps[:, :, 0], stream_z=stream_z)
        self.n_done += len(maps)
        return out
