"""Stage 3, train: one detector per region, fitted in parallel; and the fitted ensemble.

Files (``models/``)::

    <region_id>.pt   one checkpoint per region (see ensemble.detector)
    manifest.json    format, config, grid and frame size, thresholds and
                     statistics per region, training clips, checkpoint files

A region whose checkpoint records the same config and training clips is
skipped; one that differs only in the ``[score]`` settings is re-calibrated
(its statistics recomputed) without retraining.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import torch
from joblib import Parallel, delayed

from cuboids.grid import Region
from cuboids.store import load_region
from ensemble.detector import ALL_SECTIONS, MODEL_SECTIONS, RegionDetector, read_checkpoint
from ensemble.train import TrainingStopped
from pipeline.artifacts import APP, FORMAT_VERSIONS, atomic_path, remove_stale_temporaries, require_config, write_json
from pipeline.config import Config, config_differences
from pipeline.errors import ArtifactError, UserError
from pipeline.progress import progress

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA GPU")
    return device


def plan_workers(n_regions: int, n_jobs: int, device: str) -> tuple[int, int]:
    """(parallel workers, torch threads per worker) so that workers x threads = cores."""
    cores = joblib.cpu_count()
    if n_jobs <= 0:
        n_jobs = 2 if device != "cpu" else cores
    n_jobs = max(1, min(n_jobs, n_regions))
    return n_jobs, max(1, cores // n_jobs)


def training_clips(cuboids_path: Path, region_id: str) -> dict[str, str]:
    """clip id -> size:mtime of the region's tube files: what a checkpoint was trained on."""
    clips = {}
    for p in sorted((cuboids_path / region_id).glob("*.h5")):
        st = p.stat()
        clips[p.stem] = f"{st.st_size}:{st.st_mtime_ns}"
    return clips


def _status(path: Path, cfg: Config, clips: dict[str, str]) -> str:
    """'fresh', 'recalibrate' or 'train' for one region's checkpoint."""
    try:
        ck = read_checkpoint(path)
        recorded = Config.from_json(ck["config"], source=str(path))
    except UserError:
        return "train"
    if ck.get("training_clips") != clips or config_differences(recorded, cfg, MODEL_SECTIONS):
        return "train"
    return "recalibrate" if config_differences(recorded, cfg, ("score",)) else "fresh"


def partial_path(models_path: Path, region_id: str) -> Path:
    """Where a region's training state is kept after every epoch until its checkpoint is written."""
    return models_path / f"{region_id}.partial.pt"


def _load_partial(path: Path, cfg: Config, clips: dict[str, str]) -> dict | None:
    """The last epoch's training state of an interrupted run with the same config and clips, if any."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a partial state is only a shortcut: when unreadable, train from scratch
        log.warning("%s: unreadable, training this region from the start", path)
        return None
    if not isinstance(saved, dict) or saved.get("config") != cfg.to_json() or saved.get("training_clips") != clips:
        return None
    return saved["snapshot"]


def _fit_region(
    cuboids_path: Path, models_path: Path, region_id: str, cfg: Config, mode: str, device: str, report, stop: threading.Event
) -> dict[str, Any]:
    """joblib worker: train (or only re-calibrate) one region and write its checkpoint.

    Training state is saved after every epoch, so a killed run resumes from
    the last finished epoch, and ends exactly as an uninterrupted run would.
    ``report(kind, region_id, value)`` tells the caller's progress bar;
    setting ``stop`` ends training at the next batch (see :func:`_sigint_sets`).
    """
    if stop.is_set():
        return {"region_id": region_id, "stopped": True}
    tubes, region, frame_size = load_region(cuboids_path, region_id, cfg)
    clips = training_clips(cuboids_path, region_id)
    out = models_path / f"{region_id}.pt"
    partial = partial_path(models_path, region_id)
    t0 = time.perf_counter()
    if mode == "recalibrate":
        det = RegionDetector.load(out, cfg, device, sections=MODEL_SECTIONS)
        det.cfg = cfg
        det.calibrate(tubes)
    else:
        resume = _load_partial(partial, cfg, clips)
        if resume is not None:
            report("resumed", region_id, resume["state"]["epoch"] + 1)

        def on_epoch(state, snapshot):
            with atomic_path(partial) as tmp:
                torch.save({"config": cfg.to_json(), "training_clips": clips, "snapshot": snapshot}, tmp)
            report("epoch", region_id, state.val_loss[-1])

        try:
            det = RegionDetector(cfg, region, frame_size).fit(
                tubes, device, resume=resume, on_epoch=on_epoch, should_stop=stop.is_set
            )
        except TrainingStopped:  # returning (not raising) lets joblib wait for every worker to wind down
            return {"region_id": region_id, "stopped": True}
    det.save(out, clips)
    partial.unlink(missing_ok=True)
    report("done", region_id, det.history_.epoch + 1)
    return {"region_id": region_id, "seconds": time.perf_counter() - t0, "mode": mode}


@contextmanager
def _sigint_sets(stop: threading.Event):
    """While inside, Ctrl-C sets ``stop`` instead of raising KeyboardInterrupt; a second Ctrl-C raises.

    Workers poll ``stop`` between batches and return early, so the caller
    winds down within one batch and then raises KeyboardInterrupt itself.
    An exception raised into the main thread while worker threads are still
    inside torch makes the interpreter abort at exit, hence the handler.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return

    def on_sigint(signum, frame) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def train_ensemble(cuboids_path: str | Path, models_path: str | Path, cfg: Config, n_jobs: int = 0, device: str = "auto", force: bool = False) -> Path:
    """Fit every region of the grid on the tubes in ``cuboids_path``; returns the manifest's path.

    Regions train in parallel in joblib's threading backend, with torch's
    intra-op threads set so that workers x threads = cores: torch releases the
    GIL inside every operation, and threads, unlike worker processes, leave
    nothing running (or holding the work folder's lock) when the command is killed.
    """
    cuboids_path, models_path = Path(cuboids_path), Path(models_path)
    device = resolve_device(device)
    models_path.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(models_path)
    region_ids = cfg.cuboids.region_ids
    plan = {}
    for rid in region_ids:
        clips = training_clips(cuboids_path, rid)
        if not clips:
            raise ArtifactError(f"{cuboids_path / rid}: no tubes; run `cuboids` with this config first")
        plan[rid] = "train" if force else _status(models_path / f"{rid}.pt", cfg, clips)
    if force:
        for rid in region_ids:
            partial_path(models_path, rid).unlink(missing_ok=True)
    todo = {rid: mode for rid, mode in plan.items() if mode != "fresh"}
    if len(todo) < len(region_ids):
        log.info("train: %d of %d regions already up to date", len(region_ids) - len(todo), len(region_ids))
    if todo:
        # threads are planned for the whole grid, not for the regions left: a resumed run
        # then computes with the same thread count, so it ends bit for bit where an
        # uninterrupted run would (a different count changes the float reduction order)
        workers, threads = plan_workers(len(region_ids), n_jobs, device)
        workers = min(workers, len(todo))
        log.info("train: %d regions, %d in parallel x %d torch threads on %s", len(todo), workers, threads, device)
        n_train = sum(1 for m in todo.values() if m == "train")
        epochs = cfg.train.epochs
        bar = progress(total=n_train * epochs + (len(todo) - n_train), desc=f"train {len(todo)} regions", unit="epoch")

        def report(kind: str, rid: str, value: float) -> None:
            if kind == "epoch":
                bar.update(1)
                bar.set_postfix(region=rid, val_loss=f"{value:.3g}", refresh=False)
            elif kind == "resumed":
                bar.update(int(value))  # epochs finished before an interruption
            elif todo[rid] == "train":
                bar.update(epochs - int(value))  # early stopping skipped these epochs
            else:
                bar.update(1)

        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        stop = threading.Event()
        try:
            # cuDNN's default algorithms are not deterministic, so on a GPU a resumed or
            # repeated run would not end where the first did; the flags are global, hence
            # set here, around every worker, and not in each worker's thread
            with _sigint_sets(stop), torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
                Parallel(n_jobs=workers, backend="threading")(
                    delayed(_fit_region)(cuboids_path, models_path, rid, cfg, mode, device, report, stop)
                    for rid, mode in todo.items()
                )
        finally:
            torch.set_num_threads(previous)
            bar.close()
        if stop.is_set():
            raise KeyboardInterrupt
    return write_manifest(models_path, cfg)


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
                "threshold": det.stats_.threshold,
                "stats": det.stats_.to_dict(),
                "best_epoch": det.history_.best_epoch,
                "epochs_run": det.history_.epoch + 1,
                "train_seconds": round(det.history_.seconds, 2),
            }
        )
        frame_sizes.add(tuple(det.frame_size))
        clips = clips or sorted(det.training_clips_)
    if len(frame_sizes) != 1:
        raise ArtifactError(f"{models_path}: region models were trained on different frame sizes; re-run `train --force`")
    path = models_path / "manifest.json"
    write_json(
        path,
        {
            "format": f"{APP}/manifest",
            "format_version": FORMAT_VERSIONS["manifest"],
            "config": cfg.to_dict(),
            "grid": {"rows": cfg.cuboids.grid_rows, "cols": cfg.cuboids.grid_cols},
            "frame_size": list(frame_sizes.pop()),
            "regions": regions,
            "training_clips": clips,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    return path


@dataclass
class Ensemble:
    """All regions' fitted detectors, in grid order, with their statistics as arrays."""

    cfg: Config
    frame_size: tuple[int, int]  # (height, width)
    regions: list[Region]
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
        if manifest.get("format") != f"{APP}/manifest" or manifest.get("format_version") != FORMAT_VERSIONS["manifest"]:
            raise ArtifactError(f"{path}: not a {APP} manifest of version {FORMAT_VERSIONS['manifest']}")
        recorded = Config.from_record(manifest["config"], source=str(path))
        if cfg is not None:
            require_config(recorded, cfg, ALL_SECTIONS, path, "score with the config the models were trained with, or re-run `train`")
        detectors = []
        for entry in manifest["regions"]:
            name = entry["checkpoint"]
            if Path(name).name != name or not name.endswith(".pt"):
                raise ArtifactError(f"{path}: checkpoint name {name!r} points outside the models folder")
            detectors.append(RegionDetector.load(models_path / name, recorded, device))
        if [d.region.region_id for d in detectors] != recorded.cuboids.region_ids:
            raise ArtifactError(f"{path}: regions do not match the recorded grid")
        return cls(recorded, tuple(manifest["frame_size"]), [d.region for d in detectors], detectors, manifest)

    @property
    def region_ids(self) -> list[str]:
        return [r.region_id for r in self.regions]

    def stat(self, name: str) -> np.ndarray:
        """A statistic of every region as an array ``(R,)``: mean, std, threshold, pixel_scale."""
        return np.array([getattr(d.stats_, name) for d in self.detectors], dtype=np.float64)

    @property
    def needs_previous(self) -> bool:
        return self.cfg.needs_previous

    def pixel_errors(self, windows: np.ndarray) -> np.ndarray:
        """uint8 windows ``(R, B, T', C, P, P)`` -> pixel errors ``(R, B, T, P, P)``."""
        return np.stack([d.pixel_errors(w) for d, w in zip(self.detectors, windows)])

    def reconstructions(self, windows: np.ndarray) -> np.ndarray:
        """uint8 windows ``(R, B, T', C, P, P)`` -> reconstructed frames ``(R, B, T, P, P)`` in [0, 1]."""
        return np.stack([d.reconstruct_frames(w) for d, w in zip(self.detectors, windows)])
