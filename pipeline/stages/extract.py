"""Stage 1, extract: clips (videos or frame folders) -> one frames file per clip (core.frames)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

from cuboid_ad.core.artifacts import is_current, remove_stale_temporaries, source_signature
from cuboid_ad.core.cluster import Cluster, report, run_each
from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import ArtifactError, InputError, UserError
from cuboid_ad.core.frames import read_frames_info, write_frames
from cuboid_ad.core.progress import progress
from cuboid_ad.core.workdir import clip_id
from cuboid_ad.pipeline.media.decode import list_clips, open_clip, output_fps, read_frames, working_size

log = logging.getLogger(__name__)

def extract_clip(
    src_path: str | Path,
    dst_path: str | Path,
    cfg: Config,
    chunk_frames: int = 64,
    on_frames: Callable[[int], object] | None = None,
    allow_damaged: bool = False,
    stream: int = 0,
) -> Path:
    """Decode one clip (its video ``stream``) into ``dst_path`` (written atomically). Returns ``dst_path``.

    ``on_frames(n)`` is called after every chunk of n frames; without it the
    clip gets a progress bar of its own. ``allow_damaged``: keep what decodes
    of a truncated or damaged clip instead of refusing it.
    """
    src_path, dst_path = Path(src_path), Path(dst_path)
    src = open_clip(src_path, cfg.extract, stream)
    width, height = working_size(src, cfg.extract)
    bar = None
    if on_frames is None:
        bar = progress(total=src.n_frames_estimate or None, desc=f"extract {src.clip_id}", unit="frame")
        on_frames = bar.update
    try:
        n = write_frames(
            dst_path,
            read_frames(src, cfg.extract, chunk_frames, allow_damaged, with_times=True),
            (height, width, cfg.extract.channels),
            cfg,
            on_frames,
            fps=output_fps(src, cfg.extract),
            original_width=src.width,
            original_height=src.height,
            stream=stream,
            codec=src.codec,
            **source_signature(src_path),
        )
    finally:
        if bar is not None:
            bar.close()
    log.info("extracted %s: %d frames of %dx%d", src_path.name, n, width, height)
    return dst_path


def is_up_to_date(src_path: Path, dst_path: Path, cfg: Config, stream: int = 0) -> bool:
    """True when ``dst_path`` is a complete frames file of this source, video stream and extract config."""
    return is_current(dst_path, "frames", cfg, {**source_signature(src_path), "stream": stream})


def extract_folder(
    clips_path: str | Path,
    frames_path: str | Path,
    cfg: Config,
    n_jobs: int = 1,
    force: bool = False,
    allow_damaged: bool = False,
    stream: int = 0,
    cluster: Cluster | None = None,
) -> list[Path]:
    """Extract every clip of ``clips_path`` (their video ``stream``) into ``frames_path``; returns the frames files.

    Clips already extracted from the same source with the same extract config
    are skipped unless ``force``. Frames files whose clip has gone are
    removed. When some clips fail, the others are still extracted and one
    InputError at the end lists the failures. With a ``cluster``, each clip is a
    task on it; else up to ``n_jobs`` clips are decoded at once in threads.
    """
    targets = plan_extract(clips_path, frames_path)
    clips = list(targets)
    todo = [c for c in clips if force or not is_up_to_date(c, targets[c], cfg, stream)]
    if len(todo) < len(clips):
        log.info("extract: %d of %d clips already up to date", len(clips) - len(todo), len(clips))
    failures: list[str] = []
    if todo:
        total = sum(_frames_estimate(c, cfg) for c in todo)
        bar = progress(total=total or None, desc=f"extract {len(todo)} clips", unit="frame")
        extract = functools.partial(extract_clip, allow_damaged=allow_damaged, stream=stream)
        failures = run_each(extract, [(c, targets[c], cfg) for c in todo], [f"extract-{c.name}" for c in todo], n_jobs, cluster, bar.update)
        if cluster is not None:
            remove_stale_temporaries(frames_path)  # of a worker killed mid-write
        bar.close()
    if failures:
        raise InputError(f"{len(failures)} of {len(clips)} clips failed: " + "; ".join(sorted(failures)))
    check_same_size([targets[c] for c in clips])
    return [targets[c] for c in clips]


def plan_extract(clips_path: str | Path, frames_path: str | Path) -> dict[Path, Path]:
    """Each clip of ``clips_path`` -> its frames file in ``frames_path``; frames files of clips that are gone are removed."""
    clips = list_clips(clips_path)
    if not clips:
        raise InputError(f"{clips_path}: holds no clips (videos or frame folders)")
    frames_path = Path(frames_path)
    frames_path.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(frames_path)
    targets = {clip: frames_path / f"{clip_id(clip)}.h5" for clip in clips}
    for old in frames_path.glob("*.h5"):
        if old not in targets.values():
            log.info("removing %s: its clip is no longer in %s", old.name, clips_path)
            old.unlink()
    return targets


def extract_task(src: Path, dst: Path, cfg: Config, force: bool = False, allow_damaged: bool = False, stream: int = 0) -> Path:
    """One clip as a cluster task: extracted unless up to date, progress sent to the client."""
    if force or not is_up_to_date(src, dst, cfg, stream):
        extract_clip(src, dst, cfg, on_frames=report, allow_damaged=allow_damaged, stream=stream)
    return dst


def _frames_estimate(src: Path, cfg: Config) -> int:
    try:
        return open_clip(src, cfg.extract).n_frames_estimate
    except UserError:
        return 0


def check_frames_origin(frames_path: str | Path, clips_path: str | Path) -> None:
    """Refuse a frames folder extracted from another clips folder than ``clips_path``."""
    want = Path(clips_path).resolve()
    for p in sorted(Path(frames_path).glob("*.h5")):
        origin = Path(read_frames_info(p).source_path).parent
        if origin != want:
            raise ArtifactError(f"{p} was extracted from {origin}, not {want}; run `extract` with this --data first")


def check_same_size(paths: list[Path]) -> None:
    """Refuse frames files of different sizes: one camera's clips must share one grid."""
    sizes = {}
    for p in paths:
        info = read_frames_info(p)
        sizes.setdefault((info.width, info.height, info.channels), p.name)
    if len(sizes) > 1:
        desc = ", ".join(f"{name}: {w}x{h}" for (w, h, _), name in sizes.items())
        raise InputError(f"clips decode to different frame sizes ({desc}); set extract.frame_width to make them equal")

