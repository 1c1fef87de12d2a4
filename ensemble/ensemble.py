"""The fitted ensemble: every region's detector, its manifest, and the scoring pass over region tubes.

Files (``models/``)::

    <region_id>.pt   one checkpoint per region (see ensemble.detector)
    manifest.json    format, config, grid and frame size, thresholds and
                     statistics per region, training clips, checkpoint files

:class:`EnsembleScorer` is the whole scoring chain after the tubes: sliding
windows through every region's model -> per-frame pixel errors and
reconstructions -> region errors -> causal smoothing -> z -> fusion. It knows
nothing of videos: the score stage cuts frames into tubes and feeds it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.artifacts import KINDS, require_config, stamp_dict, write_json
from core.config import Config
from core.errors import ArtifactError
from core.grid import Region
from ensemble.detector import MAPS, RegionDetector
from ensemble.fusion import CausalMean, fuse, normalise, region_errors
from ensemble.sliding import SlidingWindowScorer


@dataclass(frozen=True)
class Ensemble:
    """All regions' fitted detectors, in grid order, with their statistics as arrays."""

    cfg: Config
    frame_size: tuple[int, int]  # (height, width)
    detectors: list[RegionDetector]
    manifest: dict[str, Any]

    @classmethod
    def load(cls, models_path: str | Path, cfg: Config | None = None, device: str = "cpu") -> "Ensemble":
        """Load ``models_path/manifest.json`` and every checkpoint it names; with ``cfg``, refuse other settings."""
        models_path = Path(models_path)
        path = models_path / "manifest.json"
        if not path.exists():
            raise ArtifactError(f"{path}: missing; run `train` first")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{path}: not readable JSON ({exc})") from None
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
        return cls(recorded, tuple(manifest["frame_size"]), detectors, manifest)

    @property
    def regions(self) -> list[Region]:
        return [d.region for d in self.detectors]

    @property
    def region_ids(self) -> list[str]:
        return [r.region_id for r in self.regions]

    def stat(self, name: str) -> np.ndarray:
        """A statistic of every region as an array ``(R,)``: mean, std, threshold, pixel_scale."""
        return np.array([getattr(d.stats_, name) for d in self.detectors], dtype=np.float64)

    @property
    def needs_previous(self) -> bool:
        return self.cfg.needs_previous

    def scorer(self, batch_windows: int = 64) -> "EnsembleScorer":
        return EnsembleScorer(self, batch_windows)


def write_manifest(models_path: Path, cfg: Config) -> Path:
    """Summarise the region checkpoints (all must share ``cfg``) into manifest.json."""
    regions, frame_sizes, clips = [], set(), None
    for rid in cfg.cuboids.region_ids:
        det = RegionDetector.load(models_path / f"{rid}.pt", cfg)
        r = det.region
        regions.append(
            {
                "region_id": rid, "row": r.row, "col": r.col, "top": r.top, "left": r.left, "height": r.height, "width": r.width,
                "checkpoint": f"{rid}.pt",
                "threshold": det.threshold_,
                "stats": det.stats_.to_dict(),
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
    write_json(
        path,
        {
            **stamp_dict("manifest", cfg),
            "config": cfg.to_dict(),
            "grid": {"rows": cfg.cuboids.grid_rows, "cols": cfg.cuboids.grid_cols},
            "frame_size": list(frame_sizes.pop()),
            "regions": regions,
            "training_clips": clips,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    return path


@dataclass(frozen=True)
class ScoredFrames:
    """Scores of consecutive frames ``first .. first + n - 1`` (0-based)."""

    first: int
    region_errors: np.ndarray  # (n, R) after smoothing
    z: np.ndarray  # (n, R) normalised region errors
    score: np.ndarray  # (n,) fused frame score
    anomalous: np.ndarray  # (n,) bool: some region above its threshold
    pixel_errors: np.ndarray  # (n, R, P, P)
    reconstructions: np.ndarray  # (n, R, P, P) in [0, 1], as ensemble.detector.shown_reconstruction draws them

    def __len__(self) -> int:
        return len(self.score)


class EnsembleScorer:
    """The scoring chain for one clip, fed every region's tube chunk by chunk, in frame order."""

    def __init__(self, ensemble: Ensemble, batch_windows: int = 64):
        cfg = ensemble.cfg
        self.cfg = cfg
        self.windows = SlidingWindowScorer(
            [d.window_maps for d in ensemble.detectors],
            len(MAPS),
            cfg.cuboids.clip_length_in_frames,
            cfg.score.frames_between_clips,
            ensemble.needs_previous,
            batch_windows,
        )
        self.smooth = CausalMean(cfg.score.smoothing_frames)
        self.mean = ensemble.stat("mean")
        self.std = ensemble.stat("std")
        self.n_done = 0

    def push(self, tubes: np.ndarray) -> ScoredFrames:
        """The next frames' region tubes ``(R, n, C, P, P)`` uint8; returns the frames now final."""
        return self._post(self.windows.push(tubes))

    def finish(self) -> ScoredFrames:
        return self._post(self.windows.finish())

    def _post(self, maps: np.ndarray) -> ScoredFrames:
        s = self.cfg.score
        pixel = maps[:, :, MAPS.index("error")]
        errors = self.smooth(region_errors(pixel, s.region_score, s.region_patch))
        z = normalise(errors, self.mean, self.std)
        score, anomalous = fuse(z, s)
        out = ScoredFrames(self.n_done, errors, z, score, anomalous, pixel, maps[:, :, MAPS.index("reconstruction")])
        self.n_done += len(pixel)
        return out
