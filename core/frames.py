"""The frames file: one clip decoded at the working size, as the extract stage writes it.

File layout (``frames/<clip_id>.h5``)::

    frames   uint8 (n_frames, height, width, channels), chunked along time
    time_s   float64 (n_frames,): each frame's time, seconds since the first frame (its timestamp)
    attrs    format, format_version, config, source_path, source_size, source_mtime,
             stream, fps (nominal), original_width, original_height (as displayed), n_frames,
             codec (the source's video codec as ffmpeg names it, "" for image folders; files extracted before
             it was recorded have none: read as "")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cuboid_ad.core.artifacts import atomic_path, open_h5, recorded_config, require_config, stamp
from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import ArtifactError

FRAME_CHUNK = 16  # frames per HDF5 chunk: small enough for streaming reads, large enough to compress

# video codecs (ffmpeg's names) that code a frame from earlier ones, so that what a lossy encoder leaves of a night's
# grain can last from frame to frame (cuboids.camera.Denoiser.inter_coded). Not here: codecs that code each frame
# alone (Motion JPEG, JPEG 2000, PNG, TIFF, FFV1, ProRes, DNxHD, raw video, image folders) and any codec not named
INTER_FRAME_CODECS = frozenset(
    {"h264", "hevc", "vvc", "av1", "vp8", "vp9", "mpeg4", "mpeg2video", "mpeg1video", "h263", "h263p", "msmpeg4v2", "msmpeg4v3",
     "wmv1", "wmv2", "wmv3", "vc1", "theora", "flv1", "rv30", "rv40", "cavs", "dirac"}
)  # fmt: skip


def inter_frame(codec: str) -> bool:
    """Whether a video codec (as ffmpeg names it: "h264", "mjpeg") codes frames from earlier ones."""
    return codec in INTER_FRAME_CODECS


def write_frames(
    path: str | Path,
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    size: tuple[int, int, int],
    cfg: Config,
    on_frames: Callable[[int], object] = lambda n: None,
    **attrs: Any,
) -> int:
    """Write chunks of frames, uint8 ``(n, height, width, channels)`` of ``size`` = (height, width, channels),
    with their times ``(n,)``, into a frames file, atomically; ``attrs`` (fps, source, …) are recorded
    with the stamp. Returns the frame count."""
    height, width, channels = size
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        ds = fh.create_dataset(
            "frames",
            shape=(0, height, width, channels),
            maxshape=(None, height, width, channels),
            dtype=np.uint8,
            chunks=(FRAME_CHUNK, height, width, channels),
            compression="gzip",
            compression_opts=1,
        )
        times = fh.create_dataset("time_s", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,))
        n = 0
        for chunk, stamps in chunks:
            ds.resize(n + len(chunk), axis=0)
            ds[n : n + len(chunk)] = chunk
            times.resize(n + len(chunk), axis=0)
            times[n : n + len(chunk)] = stamps
            n += len(chunk)
            on_frames(len(chunk))
        stamp(fh.attrs, "frames", cfg, n_frames=n, **attrs)
    return n


@dataclass(frozen=True)
class FramesInfo:
    """What a frames file holds, read from its attributes."""

    path: Path
    clip_id: str
    n_frames: int
    height: int
    width: int
    channels: int
    fps: float
    source_path: str
    cfg: Config
    attrs: dict[str, Any]

    @property
    def codec(self) -> str:
        """The source's video codec as ffmpeg names it ("" for image folders, and for files extracted before it was recorded)."""
        return str(self.attrs.get("codec", ""))


def read_frames_info(path: str | Path, cfg: Config | None = None) -> FramesInfo:
    """Open and check a frames file; with ``cfg``, refuse one made with other extract settings."""
    path = Path(path)
    with open_h5(path, "frames") as fh:
        recorded = recorded_config(dict(fh.attrs), path)
        if cfg is not None:
            require_config("frames", recorded, cfg, path, "re-run `extract` with this config")
        if "frames" not in fh:
            raise ArtifactError(f"{path}: holds no frames dataset")
        n, h, w, c = fh["frames"].shape
        attrs = dict(fh.attrs)
    if n != int(attrs["n_frames"]):
        raise ArtifactError(f"{path}: records {attrs['n_frames']} frames but holds {n}; delete it and re-run `extract`")
    return FramesInfo(path, path.stem, n, h, w, c, float(attrs["fps"]), str(attrs["source_path"]), recorded, attrs)


def iter_frames_file(path: str | Path, chunk_frames: int = 64) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, frames)`` chunks of a frames file, frames uint8 (n, H, W, C)."""
    with open_h5(path, "frames") as fh:
        ds = fh["frames"]
        for start in range(0, ds.shape[0], chunk_frames):
            yield start, ds[start : start + chunk_frames]


def measured_fps(times: np.ndarray, nominal: float) -> float:
    """The frame rate the frames' own times show: the reciprocal of their median interval."""
    steps = np.diff(np.asarray(times, np.float64))
    steps = steps[steps > 0]
    return float(1.0 / np.median(steps)) if len(steps) else nominal
