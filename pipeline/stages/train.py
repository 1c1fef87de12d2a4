"""Stage 3, train: one detector per region fitted in parallel, resumable, then the manifest.

A region whose checkpoint records the same config and training clips is
skipped; one that differs only in the ``[score]`` settings is re-calibrated
(its statistics recomputed) without retraining. Training state is saved after
every epoch (``<region_id>.partial.pt``), so a killed run resumes from the
last finished epoch and ends exactly as an uninterrupted run would.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from joblib import Parallel, delayed

from cuboid_ad.core.artifacts import KINDS, is_current, remove_stale_temporaries, stale_sections
from cuboid_ad.core.cluster import Cluster, Released
from cuboid_ad.core.config import Config, config_differences
from cuboid_ad.core.errors import ArtifactError, UserError
from cuboid_ad.core.progress import progress
from cuboid_ad.core.runtime import plan_workers, resolve_device, sigint_sets, torch_threads
from cuboid_ad.core.snapshots import load_partial, save_partial
from cuboid_ad.cuboids.store import load_region, tube_files
from cuboid_ad.ensemble.detector import RegionDetector, read_checkpoint
from cuboid_ad.ensemble.ensemble import write_manifest
from cuboid_ad.ensemble.fit import TrainingStopped
from cuboid_ad.pipeline.scoring.tamper import scene_reference, write_scene

log = logging.getLogger(__name__)


def region_status(path: Path, cfg: Config, clips: dict[str, str]) -> str:
    """'fresh', 'recalibrate' or 'train' for one region's checkpoint."""
    try:
        ck = read_checkpoint(path, weights_only=True)
        recorded = Config.from_json(ck["config"], source=str(path))
    except UserError:
        return "train"
    if ck.get("training_clips") != clips or stale_sections("checkpoint", recorded, cfg):
        return "train"
    # an older format's weights are kept, its statistics made anew
    old = ck["format_version"] != KINDS["checkpoint"].version
    return "recalibrate" if old or config_differences(recorded, cfg, ("score",)) else "fresh"


def region_mode(cuboids_path: Path, models_path: Path, region_id: str, cfg: Config, force: bool = False) -> str:
    """What training one region needs: 'fresh', 'recalibrate' or 'train' (``force``: 'train', from the first epoch)."""
    clips = tube_files(cuboids_path, region_id)
    if not clips:
        raise ArtifactError(f"{cuboids_path / region_id}: no tubes; run `cuboids` with this config first")
    if force:
        partial_path(models_path, region_id).unlink(missing_ok=True)
        return "train"
    return region_status(models_path / f"{region_id}.pt", cfg, clips)


def partial_path(models_path: Path, region_id: str) -> Path:
    """Where a region's training state is kept after every epoch until its checkpoint is written."""
    return models_path / f"{region_id}.partial.pt"


def _no_report(kind: str, region_id: str, value: float) -> None:
    pass


def fit_region(
    cuboids_path: Path,
    models_path: Path,
    region_id: str,
    cfg: Config,
    mode: str = "train",
    device: str = "cpu",
    report: Callable[[str, str, float], None] = _no_report,
    stop: threading.Event | Released | None = None,
) -> dict[str, Any]:
    """Train (or, ``mode="recalibrate"``, only re-calibrate) one region and write its checkpoint.

    A joblib worker: it takes paths and small values. ``report(kind, region_id,
    value)`` tells the caller's progress bar; setting ``stop`` ends training at
    the next batch (see :func:`sigint_sets`).
    """
    stop = stop or threading.Event()
    if stop.is_set():
        return {"region_id": region_id, "stopped": True}
    tubes, region, frame_size = load_region(cuboids_path, region_id, cfg)
    clips = tube_files(cuboids_path, region_id)
    out = models_path / f"{region_id}.pt"
    partial = partial_path(models_path, region_id)
    t0 = time.perf_counter()
    if mode == "recalibrate":
        det = RegionDetector.load(out, cfg, device, with_score=False).recalibrated(cfg, tubes)
    else:
        record = {"config": cfg.to_json(), "training_clips": clips}
        resume = load_partial(partial, record)
        if resume is not None:
            report("resumed", region_id, resume["state"]["epoch"] + 1)

        def on_epoch(state, snapshot):
            save_partial(partial, record, snapshot)
            report("epoch", region_id, state.val_loss[-1])

        try:
            det = RegionDetector(cfg, region, frame_size).fit(tubes, device, resume=resume, on_epoch=on_epoch, should_stop=stop.is_set)
        except TrainingStopped:  # returning (not raising) lets joblib wait for every worker to wind down
            return {"region_id": region_id, "stopped": True}
    det.save(out, clips)
    partial.unlink(missing_ok=True)
    report("done", region_id, det.history_.epoch + 1)
    return {"region_id": region_id, "seconds": time.perf_counter() - t0, "mode": mode}


def fit_region_task(
    cuboids_path: Path, models_path: Path, region_id: str, cfg: Config, mode: str | None, device: str, worker_threads: dict[str, int], threads: int
) -> dict[str, Any]:
    """:func:`fit_region` as a Dask task: torch threads from the worker's share (or ``threads``), the device
    resolved on the worker (its GPU when it has one), progress sent to the client, and a stop once the
    client has let the task go (killed or interrupted). ``mode`` None: decided here (:func:`region_mode`)."""
    from cuboid_ad.core.cluster import in_task, report

    if mode is None:
        mode = region_mode(cuboids_path, models_path, region_id, cfg)
        if mode == "fresh":
            return {"region_id": region_id, "mode": mode}
    in_task(worker_threads, threads)
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        return fit_region(cuboids_path, models_path, region_id, cfg, mode, resolve_device(device), report, Released())


def train_ensemble(
    cuboids_path: str | Path,
    models_path: str | Path,
    cfg: Config,
    n_jobs: int = 0,
    device: str = "auto",
    force: bool = False,
    threads: int = 0,
    cluster: Cluster | None = None,
) -> Path:
    """Fit every region of the grid on the tubes in ``cuboids_path``; returns the manifest's path.

    ``threads``: torch threads per worker (default: the cores shared out between the workers);
    fixing it makes the arithmetic, hence the weights, the same on any machine.

    Regions train in parallel in joblib's threading backend, with torch's
    intra-op threads set so that workers x threads = cores: torch releases the
    GIL inside every operation, and threads, unlike worker processes, leave
    nothing running (or holding the work folder's lock) when the command is killed.

    With a ``cluster``, each region is a task on it instead (see
    :func:`fit_region_task`); ``device`` is then resolved on each worker.

    The frames files beside the cuboids (``WORK/frames``) give the camera's normal view (:func:`finish_training`).
    """
    cuboids_path, models_path = Path(cuboids_path), Path(models_path)
    frames_path = cuboids_path.parent / "frames"
    if cluster is None:
        device = resolve_device(device)
    models_path.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(models_path)
    region_ids = cfg.cuboids.region_ids
    plan = {rid: region_mode(cuboids_path, models_path, rid, cfg, force) for rid in region_ids}
    todo = {rid: mode for rid, mode in plan.items() if mode != "fresh"}
    if len(todo) < len(region_ids):
        log.info("train: %d of %d regions already up to date", len(region_ids) - len(todo), len(region_ids))
    if todo:
        n_train = sum(1 for m in todo.values() if m == "train")
        epochs = cfg.train.epochs
        bar = progress(total=n_train * epochs + (len(todo) - n_train), desc=f"train {len(todo)} regions", unit="epoch")

        def report(kind: str, rid: str, value: float) -> None:
            if kind == "epoch":
                bar.update(1)
                bar.set_postfix(region=rid, val_loss=f"{value:.3g}", refresh=False)
            elif kind == "resumed":
                bar.update(int(value))  # epochs finished before an interruption
                log.info("train: %s resumed after epoch %d", rid, int(value))
            elif todo[rid] == "train":
                bar.update(epochs - int(value))  # early stopping skipped these epochs
            else:
                bar.update(1)

        if cluster is not None:
            log.info("train: %d regions as tasks on %d Dask workers", len(todo), cluster.workers)
            try:
                with cluster.progress_events(report):
                    cluster.run(fit_region_task, [(cuboids_path, models_path, rid, cfg, mode, device, cluster.threads, threads) for rid, mode in todo.items()],
                                [f"train-{rid}" for rid in todo])  # fmt: skip
            finally:
                bar.close()
            return finish_training(models_path, cfg, frames_path)
        # threads are planned for the whole grid, not for the regions left: a resumed run
        # then computes with the same thread count, so it ends bit for bit where an
        # uninterrupted run would (a different count changes the float reduction order)
        workers, threads = plan_workers(len(region_ids), n_jobs, device, threads)
        workers = min(workers, len(todo))
        log.info("train: %d regions, %d in parallel x %d torch threads on %s", len(todo), workers, threads, device)
        stop = threading.Event()
        try:
            # cuDNN's default algorithms are not deterministic, so on a GPU a resumed or
            # repeated run would not end where the first did; the flags are global, hence
            # set here, around every worker, and not in each worker's thread
            with torch_threads(threads), sigint_sets(stop), torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
                Parallel(n_jobs=workers, backend="threading")(
                    delayed(fit_region)(cuboids_path, models_path, rid, cfg, mode, device, report, stop) for rid, mode in todo.items()
                )
        finally:
            bar.close()
        if stop.is_set():
            raise KeyboardInterrupt
    return finish_training(models_path, cfg, frames_path)


def finish_training(models_path: Path, cfg: Config, frames_path: Path | None = None) -> Path:
    """The manifest, once every region is trained, and the camera's normal view for the tamper check (``scene.h5``,
    from the frames files in ``frames_path``, when there are some); temporaries of a worker killed mid-write are removed."""
    remove_stale_temporaries(models_path)
    frames = sorted(Path(frames_path).glob("*.h5")) if frames_path is not None and Path(frames_path).is_dir() else []
    if frames:
        inputs = {"frames": json.dumps({p.name: f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in frames}, sort_keys=True)}
        scene = models_path / "scene.h5"
        if not is_current(scene, "scene", cfg, inputs):
            write_scene(scene, scene_reference(frames), cfg, **inputs)
    return write_manifest(models_path, cfg)
