"""Stage 5, evaluate: score every test clip and compare with frame labels.

Labels file (the layout of UCSD Ped2's ``labels.json``)::

    {"01": {"frames": 180, "anomalous": [[61, 180]]}, ...}

frame ranges 1-based and inclusive. Writes ``metrics.json`` (see
ensemble.metrics), ``roc.png`` and ``pr.png`` (pooled frame scores, the threshold's
operating point marked) and every clip's ``scores.csv`` under ``out_path/<clip_id>/``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from ensemble.ensemble import Ensemble
from ensemble.metrics import frame_metrics
from pipeline.artifacts import write_json
from pipeline.config import Config
from pipeline.errors import InputError
from pipeline.ffmpeg_io import list_clips
from pipeline.heatmaps import curves_figures, save_figure
from pipeline.progress import progress
from pipeline.score import ScoreResult, score_video

log = logging.getLogger(__name__)


def load_labels(path: str | Path) -> dict[str, tuple[int, list[tuple[int, int]]]]:
    """clip id -> (frame count, anomalous ranges), checked for shape and bounds."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: labels file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected an object of clip id -> {{frames, anomalous}}")
    labels = {}
    for cid, entry in raw.items():
        try:
            n = int(entry["frames"])
            ranges = [(int(a), int(b)) for a, b in entry["anomalous"]]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: clip {cid!r} needs 'frames' and 'anomalous': [[first, last], ...]") from None
        for a, b in ranges:
            if not 1 <= a <= b <= n:
                raise InputError(f"{path}: clip {cid!r} range [{a}, {b}] is outside frames 1..{n}")
        labels[cid] = (n, ranges)
    return labels


def frame_labels(n_frames: int, ranges: list[tuple[int, int]]) -> np.ndarray:
    y = np.zeros(n_frames, dtype=bool)
    for a, b in ranges:
        y[a - 1 : b] = True
    return y


def evaluate(
    clips_path: str | Path,
    labels_path: str | Path,
    models_path: str | Path,
    out_path: str | Path,
    cfg: Config | None = None,
    device: str = "cpu",
    allow_damaged: bool = False,
) -> dict:
    """Score every clip of ``clips_path`` and compute frame-level metrics; returns them (also in metrics.json)."""
    out_path = Path(out_path)
    labels = load_labels(labels_path)
    clips = list_clips(clips_path)
    ids = [c.stem if c.is_file() else c.name for c in clips]
    unlabelled = sorted(set(ids) - set(labels))
    if unlabelled:
        raise InputError(f"{labels_path}: no labels for clip(s) {', '.join(unlabelled)} of {clips_path}")
    if not clips:
        raise InputError(f"{clips_path}: holds no clips")
    ens = Ensemble.load(models_path, cfg, device)
    t0 = time.perf_counter()
    results: dict[str, ScoreResult] = {}
    for clip, cid in zip(progress(clips, desc="evaluate", unit="clip"), ids):
        results[cid] = score_video(clip, models_path, out_path / cid, maps=False, ensemble=ens, allow_damaged=allow_damaged)
    seconds = time.perf_counter() - t0
    mismatched = [f"{cid} ({r.n_frames} decoded, {labels[cid][0]} labelled)" for cid, r in results.items() if r.n_frames != labels[cid][0]]
    if mismatched:
        raise InputError(f"{labels_path}: frame counts do not match the clips: {', '.join(mismatched)}")
    data = {cid: (frame_labels(*labels[cid]), r.score, r.anomalous) for cid, r in results.items()}
    metrics = frame_metrics(data)
    n_frames = sum(r.n_frames for r in results.values())
    metrics.update(
        {
            "clips": ids,
            "labels": str(Path(labels_path).resolve()),
            "models": str(Path(models_path).resolve()),
            "threshold_sigma": ens.cfg.score.threshold_sigma,
            "config": ens.cfg.to_dict(),
            "score_seconds": round(seconds, 2),
            "score_fps": round(n_frames / seconds, 1),
        }
    )
    if metrics["auc_pooled_raw"] is not None:
        pooled = [np.concatenate([d[k] for d in data.values()]) for k in range(3)]
        roc, pr = curves_figures(*pooled, title=f"({len(ids)} clips, {n_frames} frames)")
        save_figure(roc, out_path / "roc.png")
        save_figure(pr, out_path / "pr.png")
    write_json(out_path / "metrics.json", metrics)
    return metrics
