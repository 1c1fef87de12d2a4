"""Stage 2, cuboids: frames files -> one folder per region, one HDF5 tube per clip.

File layout (``cuboids/<region_id>/<clip_id>.h5``)::

    tube           uint8 (n_frames, channels, P, P): the region's crop of every frame
                   (pixels, or optical flow for flow models: see cuboids.slicing)
    window_starts  int64 (n_windows,): first frame of each training window
    attrs          format, format_version, config, region_id, row, col, box (top, left, height, width),
                   frame_height, frame_width, clip_id, fps, n_frames,
                   frames_size, frames_mtime (the frames file it was cut from)

A window ``tube[s : s + T]`` is a cuboid; it is not stored a second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from joblib import Parallel, delayed

from cuboids.grid import Region, make_grid
from cuboids.slicing import TubeCutter, window_starts
from pipeline.artifacts import atomic_path, open_h5, recorded_config, remove_stale_temporaries, require_config, stamp
from pipeline.config import Config, config_differences
from pipeline.errors import ArtifactError, InputError, UserError
from pipeline.extract import iter_frames_file, read_frames_info
from pipeline.progress import progress

log = logging.getLogger(__name__)

SECTIONS = ("extract", "cuboids")


def _frames_signature(frames_path: Path) -> dict[str, object]:
    st = frames_path.stat()
    return {"frames_size": int(st.st_size), "frames_mtime": float(st.st_mtime)}


def region_file(cuboids_path: Path, region_id: str, clip_id: str) -> Path:
    return Path(cuboids_path) / region_id / f"{clip_id}.h5"


def slice_clip(
    frames_path: str | Path,
    cuboids_path: str | Path,
    cfg: Config,
    chunk_frames: int = 128,
    on_frames: Callable[[int], object] | None = None,
) -> list[Path]:
    """Cut one frames file into a tube per region; returns the region files written."""
    frames_path, cuboids_path = Path(frames_path), Path(cuboids_path)
    info = read_frames_info(frames_path, cfg)
    c = cfg.cuboids
    if info.n_frames < c.clip_length_in_frames:
        raise InputError(
            f"{info.source_path}: {info.n_frames} frames, shorter than one window "
            f"(cuboids.clip_length_in_frames = {c.clip_length_in_frames})"
        )
    regions = make_grid(info.height, info.width, c)
    P = c.patch_size
    starts = window_starts(info.n_frames, c.clip_length_in_frames, c.frames_between_clips)
    signature = _frames_signature(frames_path)
    paths = [region_file(cuboids_path, r.region_id, info.clip_id) for r in regions]
    with ExitStack() as stack:
        tubes = []
        for region, path in zip(regions, paths):
            tmp = stack.enter_context(atomic_path(path))
            # no chunk cache: writes come in whole 64-frame chunks, and with twelve files open
            # HDF5's default per-dataset cache made the stage's memory grow with the clip's
            # length (about 80 MB over a 10-minute clip, against flat without it)
            fh = stack.enter_context(h5py.File(tmp, "w", rdcc_nbytes=0))
            ds = fh.create_dataset(
                "tube",
                shape=(info.n_frames, cfg.tube_channels, P, P),
                dtype=np.uint8,
                chunks=(min(64, info.n_frames), cfg.tube_channels, P, P),
                compression="gzip",
                compression_opts=1,
            )
            fh.create_dataset("window_starts", data=starts)
            stamp(
                fh.attrs,
                "tube",
                cfg,
                region_id=region.region_id,
                row=region.row,
                col=region.col,
                box=np.array([region.top, region.left, region.height, region.width]),
                frame_height=info.height,
                frame_width=info.width,
                clip_id=info.clip_id,
                fps=info.fps,
                n_frames=info.n_frames,
                **signature,
            )
            tubes.append(ds)
        cut = TubeCutter.for_config(regions, cfg)
        for start, frames in iter_frames_file(frames_path, chunk_frames):
            crops = cut(frames)  # (R, n, C, P, P)
            for ds, crop in zip(tubes, crops):
                ds[start : start + len(frames)] = crop
            if on_frames:
                on_frames(len(frames))
    return paths


def _is_up_to_date(frames_path: Path, cuboids_path: Path, cfg: Config) -> bool:
    clip_id = frames_path.stem
    signature = _frames_signature(frames_path)
    for region_id in cfg.cuboids.region_ids:
        path = region_file(cuboids_path, region_id, clip_id)
        if not path.exists():
            return False
        try:
            with open_h5(path, "tube") as fh:
                attrs = dict(fh.attrs)
            recorded = recorded_config(attrs, path)
        except UserError:
            return False
        if any(attrs.get(k) != v for k, v in signature.items()) or config_differences(recorded, cfg, SECTIONS):
            return False
    return True


def slice_folder(
    frames_path: str | Path,
    cuboids_path: str | Path,
    cfg: Config,
    n_jobs: int = 1,
    force: bool = False,
) -> list[Path]:
    """Slice every frames file of ``frames_path``; returns the frames files covered.

    Up-to-date tubes (same frames file, same extract and cuboid config) are
    kept unless ``force``; tubes of clips that are gone, and region folders
    that are not in the current grid, are removed. A clip that cannot be
    sliced (shorter than one window) does not stop the others; one InputError
    at the end lists the failures.
    """
    frames_path, cuboids_path = Path(frames_path), Path(cuboids_path)
    frames_files = sorted(frames_path.glob("*.h5"))
    if not frames_files:
        raise ArtifactError(f"{frames_path}: no frames files; run `extract` first")
    infos = [read_frames_info(p, cfg) for p in frames_files]
    make_grid(infos[0].height, infos[0].width, cfg.cuboids)  # fail early on a grid too fine for the frames
    _prune(cuboids_path, cfg, {p.stem for p in frames_files})
    todo = [p for p in frames_files if force or not _is_up_to_date(p, cuboids_path, cfg)]
    if len(todo) < len(frames_files):
        log.info("cuboids: %d of %d clips already up to date", len(frames_files) - len(todo), len(frames_files))
    if todo:
        n_by_clip = {i.path: i.n_frames for i in infos}
        bar = progress(total=sum(n_by_clip[p] for p in todo), desc=f"cuboids {len(todo)} clips", unit="frame")
        jobs = Parallel(n_jobs=min(n_jobs, len(todo)), prefer="threads", return_as="generator_unordered")(
            delayed(_slice_or_report)(p, cuboids_path, cfg, bar.update) for p in todo
        )
        failures = [error for error in jobs if error]
        bar.close()
        if failures:
            raise InputError(f"{len(failures)} of {len(frames_files)} clips failed: " + "; ".join(sorted(failures)))
    return frames_files


def _slice_or_report(frames_path: Path, cuboids_path: Path, cfg: Config, on_frames) -> str | None:
    try:
        slice_clip(frames_path, cuboids_path, cfg, on_frames=on_frames)
    except UserError as exc:
        return str(exc)
    return None


def _prune(cuboids_path: Path, cfg: Config, clip_ids: set[str]) -> None:
    if not cuboids_path.is_dir():
        return
    wanted = set(cfg.cuboids.region_ids)
    for folder in cuboids_path.iterdir():
        if not folder.is_dir():
            continue
        remove_stale_temporaries(folder)
        for path in folder.glob("*.h5"):
            if folder.name not in wanted or path.stem not in clip_ids:
                path.unlink()
        if folder.name not in wanted and not any(folder.iterdir()):
            folder.rmdir()


@dataclass(frozen=True)
class RegionTube:
    """One clip's tube of one region, loaded in memory."""

    clip_id: str
    tube: np.ndarray  # uint8 (n_frames, channels, P, P)
    window_starts: np.ndarray  # int64 (n_windows,)
    fps: float


def read_tube(path: str | Path, cfg: Config) -> tuple[RegionTube, Region, tuple[int, int]]:
    """Load one region file, refusing other extract/cuboid settings.

    Returns the tube, its region and the ``(height, width)`` of the frames it was cut from.
    """
    path = Path(path)
    with open_h5(path, "tube") as fh:
        attrs = dict(fh.attrs)
        require_config(recorded_config(attrs, path), cfg, SECTIONS, path, "re-run `cuboids` with this config")
        tube = fh["tube"][()]
        starts = fh["window_starts"][()]
    top, left, height, width = (int(v) for v in attrs["box"])
    region = Region(str(attrs["region_id"]), int(attrs["row"]), int(attrs["col"]), top, left, height, width)
    frame_size = (int(attrs["frame_height"]), int(attrs["frame_width"]))
    return RegionTube(str(attrs["clip_id"]), tube, starts, float(attrs["fps"])), region, frame_size


def load_region(cuboids_path: str | Path, region_id: str, cfg: Config) -> tuple[list[RegionTube], Region, tuple[int, int]]:
    """All clips' tubes of one region, sorted by clip; refuses a mixed or empty store."""
    folder = Path(cuboids_path) / region_id
    paths = sorted(folder.glob("*.h5"))
    if not paths:
        raise ArtifactError(f"{folder}: no tubes; run `cuboids` first")
    loaded = [read_tube(p, cfg) for p in paths]
    regions = {(r, s) for _, r, s in loaded}
    if len(regions) > 1:
        raise ArtifactError(f"{folder}: tubes cut from frames of different sizes; re-run `cuboids --force`")
    _, region, frame_size = loaded[0]
    return [t for t, _, _ in loaded], region, frame_size
