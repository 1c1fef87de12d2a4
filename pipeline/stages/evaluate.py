"""Stage 5, evaluate: score every test clip and compare with frame labels (core.labels).

Writes ``metrics.json`` (frame and event metrics, see
ensemble.metrics), ``roc.png`` and ``pr.png`` (pooled frame scores, the threshold's
operating point marked) and every clip's ``scores.csv`` and ``regularity.csv``
(Chong & Tay's regularity score, normalised within the clip) under ``out_path/<clip_id>/``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from cuboid_ad.core.artifacts import atomic_path, write_json
from cuboid_ad.core.cluster import Cluster
from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import InputError
from cuboid_ad.core.labels import frame_labels, load_labels
from cuboid_ad.core.progress import progress
from cuboid_ad.core.workdir import clip_id
from cuboid_ad.ensemble.ensemble import Ensemble
from cuboid_ad.ensemble.metrics import event_metrics, frame_metrics, regularity
from cuboid_ad.pipeline.media.decode import list_clips
from cuboid_ad.pipeline.pictures.figures import curves_figures, save_figure
from cuboid_ad.pipeline.stages.score import ScoreResult, score_video

log = logging.getLogger(__name__)


def evaluate(
    clips_path: str | Path,
    labels_path: str | Path,
    models_path: str | Path,
    out_path: str | Path,
    cfg: Config | None = None,
    device: str = "cpu",
    allow_damaged: bool = False,
    stream: int = 0,
    cluster: Cluster | None = None,
) -> dict:
    """Score every clip of ``clips_path`` and compute frame-level metrics; returns them (also in metrics.json).

    With a ``cluster``, each clip is scored by a task on it (``device`` resolved on the worker).
    """
    out_path = Path(out_path)
    labels, clips, ids = plan_evaluate(clips_path, labels_path)
    t0 = time.perf_counter()
    results: dict[str, ScoreResult] = {}
    if cluster is None:
        ens = Ensemble.load(models_path, cfg, device)
        for clip, cid in zip(progress(clips, desc="evaluate", unit="clip"), ids):
            results[cid] = score_video(clip, models_path, out_path / cid, maps=False, ensemble=ens, allow_damaged=allow_damaged, stream=stream)
    else:
        ens = Ensemble.load(models_path, cfg, "cpu")  # checked here, once, before any task starts
        with progress(total=len(clips), desc="evaluate", unit="clip") as bar:
            scored = cluster.run(score_clip_task, [(c, models_path, out_path / cid, cfg, device, allow_damaged, stream, cluster.threads) for c, cid in zip(clips, ids)],
                                 [f"score-{cid}" for cid in ids], on_done=lambda i, r: bar.update(1))  # fmt: skip
        results = dict(zip(ids, scored))
    return summarise(results, labels, labels_path, models_path, out_path, ens, time.perf_counter() - t0)


def plan_evaluate(clips_path: str | Path, labels_path: str | Path) -> tuple[dict, list[Path], list[str]]:
    """The labels, the clips to score and their ids; refuses a clip without labels."""
    labels = load_labels(labels_path)
    clips = list_clips(clips_path)
    ids = [clip_id(c) for c in clips]
    unlabelled = sorted(set(ids) - set(labels))
    if unlabelled:
        raise InputError(f"{labels_path}: no labels for clip(s) {', '.join(unlabelled)} of {clips_path}")
    if not clips:
        raise InputError(f"{clips_path}: holds no clips")
    return labels, clips, ids


def summarise(
    results: dict[str, ScoreResult], labels: dict, labels_path: str | Path, models_path: str | Path, out_path: Path, ens: Ensemble, seconds: float
) -> dict:
    """Metrics of scored clips against their labels, written to ``out_path/metrics.json`` with ROC and PR plots."""
    ids = list(results)
    mismatched = [f"{cid} ({r.n_frames} decoded, {labels[cid][0]} labelled)" for cid, r in results.items() if r.n_frames != labels[cid][0]]
    if mismatched:
        raise InputError(f"{labels_path}: frame counts do not match the clips: {', '.join(mismatched)}")
    data = {cid: (frame_labels(*labels[cid]), r.score, r.anomalous) for cid, r in results.items()}
    for cid, r in results.items():  # beside each clip's scores.csv
        write_regularity(out_path / cid / "regularity.csv", r.score)
    metrics = frame_metrics(data)
    metrics["events"] = event_metrics({cid: (data[cid][0], r.events, r.fps) for cid, r in results.items()})
    n_frames = sum(r.n_frames for r in results.values())
    metrics.update(
        {
            "clips": ids,
            "labels": str(Path(labels_path).resolve()),
            "models": str(Path(models_path).resolve()),
            "threshold": ens.threshold_,
            "false_alarm_rate_target": ens.cfg.score.false_alarm_rate,
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


def write_regularity(path: Path, score: np.ndarray) -> None:
    """``frame,regularity``: Chong & Tay's regularity score of a whole clip (see ensemble.metrics.regularity)."""
    with atomic_path(path) as tmp:
        rows = "".join(f"{i + 1},{v:.4f}\n" for i, v in enumerate(regularity(score)))
        tmp.write_text("frame,regularity\n" + rows, encoding="utf-8")


def score_clip_task(
    clip: Path,
    models_path: Path,
    out_path: Path,
    cfg: Config | None,
    device: str,
    allow_damaged: bool,
    stream: int,
    worker_threads: dict[str, int],
    maps: bool = False,
) -> ScoreResult:
    """One clip scored (``maps``: with maps.h5) as a Dask task, on the worker's GPU when it has one."""
    from cuboid_ad.core.cluster import in_task
    from cuboid_ad.core.runtime import resolve_device

    in_task(worker_threads)
    return score_video(clip, models_path, out_path, cfg, maps=maps, device=resolve_device(device), allow_damaged=allow_damaged, stream=stream)
