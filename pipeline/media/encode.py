"""Encoding frames into H.264 MP4 files with ffmpeg: one writer, one rule for the encoder, for every video we make.

The report's side-by-side video and a live event's clip both go through
:class:`Mp4Writer`: frames are piped to ffmpeg as they come and the file appears
under its name only when complete. The encoder is libx264 when this ffmpeg has
it, else libopenh264 (some distributions' ffmpeg ship only the latter); with
neither, writing refuses with one line. (Lossless clips of synthetic frames:
``pipeline.media.synthetic.write_video``.)
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from cuboid_ad.core.artifacts import commit, temporary_name
from cuboid_ad.core.errors import UserError
from cuboid_ad.pipeline.media.decode import ffmpeg_exe

H264_ENCODERS = ("libx264", "libopenh264")  # in order of preference
# per encoder: what makes its output a good viewing copy (libopenh264 has no quality scale: a bit rate)
_QUALITY = {"libx264": ["-preset", "veryfast", "-crf", "23"], "libopenh264": ["-b:v", "2M"]}


def pick_h264_encoder(encoders_text: str) -> str:
    """The preferred H.264 encoder among those ``ffmpeg -encoders`` lists; UserError when it lists none."""
    listed = set(re.findall(r"^\s*V\S*\s+(\S+)", encoders_text, re.M))
    for name in H264_ENCODERS:
        if name in listed:
            return name
    raise UserError(f"{ffmpeg_exe()} has no H.264 encoder ({' or '.join(H264_ENCODERS)}); install imageio-ffmpeg or a full ffmpeg")


@lru_cache(maxsize=1)
def h264_encoder() -> str:
    """The H.264 encoder this machine's ffmpeg has (see :func:`pick_h264_encoder`)."""
    listing = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return pick_h264_encoder(listing)


class Mp4Writer:
    """Frames ``(H, W, C)`` uint8 (C = 1 gray, 3 RGB) piped into an H.264 MP4 at ``fps``; odd sides are padded to even.

    ``close()`` puts the file in place and returns its path; ``abort()`` drops it. ``encoder``: which one
    (default :func:`h264_encoder`).
    """

    def __init__(self, path: str | Path, size: tuple[int, int], channels: int, fps: float, encoder: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temporary_name(self.path)
        encoder = encoder or h264_encoder()
        h, w = size
        args = [
            ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "gray" if channels == 1 else "rgb24", "-s", f"{w}x{h}", "-framerate", f"{fps:.6g}", "-i", "pipe:0",
            "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", encoder, *_QUALITY.get(encoder, []),
            "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", str(self.tmp),
        ]  # fmt: skip
        self.errors = tempfile.TemporaryFile()  # a file, not a pipe: ffmpeg never blocks on what it says
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.errors)
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
            self.frames += 1
        except (BrokenPipeError, ValueError):
            pass  # ffmpeg failed: close() says why

    def close(self) -> Path:
        """Finish the file; UserError with ffmpeg's reason when it could not be written (nothing is left behind)."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait()
        self.errors.seek(0)
        said = self.errors.read().decode(errors="replace").strip().splitlines()
        self.errors.close()
        if self.proc.returncode != 0 or not self.tmp.exists():
            self.tmp.unlink(missing_ok=True)
            raise UserError(f"{self.path.name}: ffmpeg could not encode the video ({said[-1] if said else 'no message'})")
        commit(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.errors.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
