"""Stage 2, cuboids: every frames file of a work folder -> its tubes in the per-region store (cuboids.store)."""

from __future__ import annotations

import logging
from pathlib import Path

from joblib import Parallel, delayed

from core.config import Config
from core.errors import ArtifactError, InputError, UserError
from core.frames import FramesInfo, read_frames_info
from core.grid import make_grid
from core.progress import progress
from cuboids.store import is_up_to_date, prune, slice_clip
from pipeline.cluster import Cluster, report

log = logging.getLogger(__name__)


def slice_folder(
    frames_path: str | Path,
    cuboids_path: str | Path,
    cfg: Config,
    n_jobs: int = 1,
    force: bool = False,
    cluster: Cluster | None = None,
) -> list[Path]:
    """Slice every frames file of ``frames_path``; returns the frames files covered.

    Up-to-date tubes (same frames file, same extract and cuboid config) are
    kept unless ``force``; tubes of clips that are gone, and region folders
    that are not in the current grid, are removed. A clip that cannot be
    sliced (shorter than one window) does not stop the others; one InputError
    at the end lists the failures. With a ``cluster``, each clip is a task on
    it; else up to ``n_jobs`` clips are sliced at once in threads.
    """
    frames_path, cuboids_path = Path(frames_path), Path(cuboids_path)
    infos = plan_slicing(frames_path, cuboids_path, cfg)
    frames_files = [i.path for i in infos]
    todo = [p for p in frames_files if force or not is_up_to_date(p, cuboids_path, cfg)]
    if len(todo) < len(frames_files):
        log.info("cuboids: %d of %d clips already up to date", len(frames_files) - len(todo), len(frames_files))
    if todo:
        n_by_clip = {i.path: i.n_frames for i in infos}
        bar = progress(total=sum(n_by_clip[p] for p in todo), desc=f"cuboids {len(todo)} clips", unit="frame")
        if cluster is None:
            jobs = Parallel(n_jobs=min(n_jobs, len(todo)), prefer="threads", return_as="generator_unordered")(
                delayed(_slice_or_report)(p, cuboids_path, cfg, bar.update) for p in todo
            )
        else:
            with cluster.progress_events(bar.update):
                jobs = cluster.run(_slice_or_report, [(p, cuboids_path, cfg, report) for p in todo], [f"cuboids-{p.stem}" for p in todo])
            prune(cuboids_path, cfg, {p.stem for p in frames_files})  # temporaries of a worker killed mid-write
        failures = [error for error in jobs if error]
        bar.close()
        if failures:
            raise InputError(f"{len(failures)} of {len(frames_files)} clips failed: " + "; ".join(sorted(failures)))
    return frames_files


def plan_slicing(frames_path: Path, cuboids_path: Path, cfg: Config) -> list[FramesInfo]:
    """The frames files to slice, checked against the grid; tubes of clips that are gone are removed."""
    frames_files = sorted(Path(frames_path).glob("*.h5"))
    if not frames_files:
        raise ArtifactError(f"{frames_path}: no frames files; run `extract` first")
    infos = [read_frames_info(p, cfg) for p in frames_files]
    make_grid(infos[0].height, infos[0].width, cfg.cuboids)  # fail early on a grid too fine for the frames
    prune(Path(cuboids_path), cfg, {p.stem for p in frames_files})
    return infos


def slice_task(frames_file: Path, cuboids_path: Path, cfg: Config, force: bool = False) -> Path:
    """One frames file as a cluster task: sliced unless its tubes are up to date, progress sent to the client."""
    if force or not is_up_to_date(frames_file, cuboids_path, cfg):
        slice_clip(frames_file, cuboids_path, cfg, on_frames=report)
    return frames_file


def _slice_or_report(frames_path: Path, cuboids_path: Path, cfg: Config, on_frames) -> str | None:
    try:
        slice_clip(frames_path, cuboids_path, cfg, on_frames=on_frames)
    except UserError as exc:
        return str(exc)
    return None
