"""Stage 2, cuboids: every frames file of a work folder -> its tubes in the per-region store (cuboids.store)."""

from __future__ import annotations

import logging
from pathlib import Path

from cuboid_ad.core.cluster import Cluster, report, run_each
from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import ArtifactError, InputError
from cuboid_ad.core.frames import FramesInfo, read_frames_info
from cuboid_ad.core.grid import make_grid
from cuboid_ad.core.progress import progress
from cuboid_ad.cuboids.store import is_up_to_date, prune, slice_clip

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
        failures = run_each(slice_clip, [(p, cuboids_path, cfg) for p in todo], [f"cuboids-{p.stem}" for p in todo], n_jobs, cluster, bar.update)
        if cluster is not None:
            prune(cuboids_path, cfg, {p.stem for p in frames_files})  # temporaries of a worker killed mid-write
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
