"""The per-region HDF5 store: one folder per region, one tube file per clip.

File layout (``cuboids/<region_id>/<clip_id>.h5``)::

    tube           uint8 (n_frames, channels, P, P): the region's crop of every frame
                   (pixels, or optical flow for flow models: see core.tubes)
    window_starts  int64 (n_windows,): first frame of each training window
    attrs          format, format_version, config, region_id, row, col, box (top, left, height, width),
                   frame_height, frame_width, clip_id, fps, n_frames,
                   frames_size, frames_mtime (the frames file it was cut from)

A window ``tube[s : s + T]`` is a cuboid; it is not stored a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import h5py
import numpy as np

from cuboid_ad.core.artifacts import atomic_path, is_current, open_h5, recorded_config, remove_stale_temporaries, require_config, stamp
from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import ArtifactError, InputError
from cuboid_ad.core.frames import iter_frames_file, read_frames_info
from cuboid_ad.core.grid import Region, make_grid
from cuboid_ad.core.tubes import RegionTube
from cuboid_ad.core.windows import window_starts
from cuboid_ad.cuboids.slicing import TubeCutter


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
        cut = TubeCutter.for_config(regions, cfg, info.codec)
        for start, frames in iter_frames_file(frames_path, chunk_frames):
            crops = cut(frames)  # (R, n, C, P, P)
            for ds, crop in zip(tubes, crops):
                ds[start : start + len(frames)] = crop
            if on_frames:
                on_frames(len(frames))
    return paths


def is_up_to_date(frames_path: Path, cuboids_path: Path, cfg: Config) -> bool:
    """True when every region's tube of this frames file is complete, cut from it, with this config."""
    signature = _frames_signature(frames_path)
    return all(is_current(region_file(cuboids_path, rid, frames_path.stem), "tube", cfg, signature) for rid in cfg.cuboids.region_ids)


def prune(cuboids_path: Path, cfg: Config, clip_ids: set[str]) -> None:
    """Remove tubes of clips that are gone and region folders that are not in the current grid."""
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


def read_tube(path: str | Path, cfg: Config) -> tuple[RegionTube, Region, tuple[int, int]]:
    """Load one region file, refusing other extract/cuboid settings.

    Returns the tube, its region and the ``(height, width)`` of the frames it was cut from.
    """
    path = Path(path)
    with open_h5(path, "tube") as fh:
        attrs = dict(fh.attrs)
        require_config("tube", recorded_config(attrs, path), cfg, path, "re-run `cuboids` with this config")
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


def tube_files(cuboids_path: str | Path, region_id: str) -> dict[str, str]:
    """clip id -> size:mtime of the region's tube files: what a model trained on them was trained on."""
    clips = {}
    for p in sorted((Path(cuboids_path) / region_id).glob("*.h5")):
        st = p.stat()
        clips[p.stem] = f"{st.st_size}:{st.st_mtime_ns}"
    return clips
