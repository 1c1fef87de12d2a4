"""Decoding clips with FFmpeg (through ffmpeg-python) into streams of frames.

A clip is a video file in any container ffmpeg reads, or a folder holding one
numbered image sequence (UCSD's ``001.tif`` …, ``000.jpg`` …). Both go through
the same ffmpeg filter chain (optional fps resampling, then an area-averaging
resize to the working size, then gray or RGB), so a folder and a lossless video
of the same frames decode to the same pixels.

Frames come out of ffmpeg's stdout in bounded chunks, so memory does not grow
with the length of the clip. ffprobe is not needed: size and rate are read
from ffmpeg's own description of the input.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import ffmpeg
import numpy as np
from PIL import Image

from core.config import ExtractConfig
from core.errors import InputError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {
    ".mkv", ".mp4", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts",
    ".flv", ".wmv", ".ogv", ".y4m", ".3gp", ".nut", ".gif",
}
IMAGE_SUFFIXES = {".tif", ".tiff", ".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm"}
_MAX_SIDE = 8192


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The system ffmpeg when on PATH, else the binary shipped by imageio-ffmpeg."""
    override = os.environ.get("CUBOID_AD_FFMPEG")
    if override:
        return override
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:  # pragma: no cover - imageio-ffmpeg is a dependency
        raise InputError("no ffmpeg found: install ffmpeg or the imageio-ffmpeg package") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class ClipSource:
    """What a clip is before decoding: its size, rate and how to ask ffmpeg for it."""

    path: Path
    kind: str  # "video" or "folder"
    width: int
    height: int
    fps: float
    n_frames_estimate: int  # exact for folders, from the duration for videos (0 = unknown)
    input_url: str  # what follows ffmpeg's -i
    input_options: tuple[tuple[str, str], ...] = ()

    @property
    def clip_id(self) -> str:
        return self.path.stem if self.kind == "video" else self.path.name


def is_clip(path: Path) -> bool:
    """A video file by its suffix, or a folder holding images."""
    if path.name.startswith("."):
        return False
    if path.is_dir():
        return any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
    return path.suffix.lower() in VIDEO_SUFFIXES


def list_clips(folder: str | Path) -> list[Path]:
    """Clips directly inside ``folder``, sorted by name; other files are ignored."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    clips = sorted((p for p in folder.iterdir() if is_clip(p)), key=lambda p: p.name)
    ids: dict[str, Path] = {}
    for p in clips:
        cid = p.stem if p.is_file() else p.name
        if cid in ids:
            raise InputError(f"{folder}: clips {ids[cid].name!r} and {p.name!r} share the name {cid!r}")
        ids[cid] = p
    return clips


def open_clip(path: str | Path, cfg: ExtractConfig) -> ClipSource:
    """Describe a clip without decoding it; raises InputError for anything unusable."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        return _open_folder(path, cfg)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    return _open_video(path)


def _open_folder(path: Path, cfg: ExtractConfig) -> ClipSource:
    images = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    if not images:
        raise InputError(f"{path}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    suffixes = {p.suffix for p in images}
    if len(suffixes) > 1:
        raise InputError(f"{path}: mixed image types {sorted(suffixes)}; keep one sequence per folder")
    numbered = []
    for p in images:
        m = re.fullmatch(r"(.*?)(\d+)", p.stem)
        if not m:
            raise InputError(f"{path}: {p.name!r} is not numbered; frames must be named like 001{p.suffix}")
        numbered.append((m.group(1), m.group(2), p))
    prefixes = {n[0] for n in numbered}
    if len(prefixes) > 1:
        raise InputError(f"{path}: several numbered sequences ({sorted(prefixes)}); keep one per folder")
    widths = {len(n[1]) for n in numbered}
    if len(widths) == 1:
        digits = f"%0{widths.pop()}d"
    elif all(n[1] == str(int(n[1])) for n in numbered):
        digits = "%d"
    else:
        raise InputError(f"{path}: frame numbers are zero-padded inconsistently")
    numbers = sorted(int(n[1]) for n in numbered)
    missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    if missing:
        raise InputError(f"{path}: gap in frame numbering, {len(missing)} missing (first: {missing[0]})")
    sizes = collections.Counter()
    first_of_size = {}
    for _, _, p in numbered:
        try:
            with Image.open(p) as im:
                sizes[im.size] += 1
                first_of_size.setdefault(im.size, p.name)
        except (OSError, Image.DecompressionBombError) as exc:
            raise InputError(f"{p}: unreadable image ({exc})") from None
    if len(sizes) > 1:
        (common, _), (odd, _) = sizes.most_common(2)
        raise InputError(f"{path}: mixed frame sizes, e.g. {first_of_size[odd]} is {odd[0]}x{odd[1]}, most are {common[0]}x{common[1]}")
    (width, height), = sizes.keys()
    _check_size(path, width, height)
    # '%' is special in ffmpeg's image2 patterns, in the folder's path as in the file names
    pattern = os.path.join(str(path.resolve()), numbered[0][0]).replace("%", "%%") + f"{digits}{numbered[0][2].suffix}"
    return ClipSource(
        path=path,
        kind="folder",
        width=width,
        height=height,
        fps=cfg.frame_folder_fps,
        n_frames_estimate=len(numbers),
        input_url=pattern,
        input_options=(("f", "image2"), ("framerate", repr(cfg.frame_folder_fps)), ("start_number", str(numbers[0]))),
    )


_STREAM = re.compile(r"Stream #\d+:\d+\S*: Video: (?P<rest>.*)")
_SIZE = re.compile(r"(?:^|[\s,])(\d{1,6})x(\d{1,6})(?=[\s,\[]|$)")
_FPS = re.compile(r"([\d.]+)(k?) (fps|tbr)")
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def _open_video(path: Path) -> ClipSource:
    url = "file:" + str(path.resolve())
    try:
        proc = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", url],
            capture_output=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        raise InputError(f"{path}: ffmpeg took too long to read the file header") from None
    text = proc.stderr.decode("utf-8", errors="replace")
    m = _STREAM.search(text)
    if not m:
        if "Input #" in text:
            raise InputError(f"{path}: has no video stream")
        raise InputError(f"{path}: not a video ffmpeg can read ({_last_error(text, url)})")
    rest = m.group("rest")
    size = _SIZE.search(rest)
    if not size:
        raise InputError(f"{path}: ffmpeg reports no frame size for its video stream")
    width, height = int(size.group(1)), int(size.group(2))
    _check_size(path, width, height)
    fps = 0.0
    for value, kilo, _ in _FPS.findall(rest):
        try:
            fps = float(value) * (1000 if kilo else 1)
        except ValueError:
            continue
        if fps > 0:
            break
    if not 0 < fps <= 1000:
        log.warning("%s: frame rate unknown, assuming 25 fps", path)
        fps = 25.0
    n_est = 0
    d = _DURATION.search(text)
    if d:
        seconds = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3))
        n_est = int(round(seconds * fps))
    return ClipSource(path=path, kind="video", width=width, height=height, fps=fps, n_frames_estimate=n_est, input_url=url)


def _check_size(path: Path, width: int, height: int) -> None:
    if not (16 <= width <= _MAX_SIDE and 16 <= height <= _MAX_SIDE):
        raise InputError(f"{path}: frame size {width}x{height} is outside what this tool handles (16 to {_MAX_SIDE} pixels a side)")


def _last_error(text: str, url: str) -> str:
    """ffmpeg's most specific complaint: its last line that is not a generic summary."""
    lines = [re.sub(r"^\[[^\]]*@ 0x[0-9a-f]+\] ", "", ln.strip()) for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("At least one output", "Use -h", "Output #"))]
    specific = [ln for ln in lines if not ln.startswith(("Error opening input", "Error opening output"))]
    msg = (specific or lines or ["ffmpeg gave no reason"])[-1].rstrip(".")
    msg = msg.replace(url + ": ", "").replace(url, "input")
    return msg[:200]


def working_size(src: ClipSource, cfg: ExtractConfig) -> tuple[int, int]:
    """(width, height) of decoded frames: the configured height, width by aspect if not set."""
    height = cfg.frame_height
    width = cfg.frame_width or max(2, int(round(src.width * height / src.height / 2)) * 2)
    return width, height


def output_fps(src: ClipSource, cfg: ExtractConfig) -> float:
    return cfg.fps or src.fps


def read_frames(src: ClipSource, cfg: ExtractConfig, chunk_frames: int = 64, allow_damaged: bool = False) -> Iterator[np.ndarray]:
    """Yield the clip's frames as uint8 arrays ``(n, height, width, channels)``, n <= chunk_frames.

    Raises InputError if ffmpeg fails or decodes nothing, and, after the last
    frame, if ffmpeg reported decoding errors (a truncated or damaged file),
    unless ``allow_damaged``: then the errors are logged and the frames that
    could be decoded are kept.
    """
    width, height = working_size(src, cfg)
    channels = cfg.channels
    stream = ffmpeg.input(src.input_url, **dict(src.input_options)).video
    if cfg.fps:
        stream = stream.filter("fps", fps=cfg.fps)
    stream = stream.filter("scale", width, height, flags="area")
    out = stream.output("pipe:", format="rawvideo", pix_fmt="gray" if channels == 1 else "rgb24")
    args = out.global_args("-nostdin", "-hide_banner", "-loglevel", "error").compile(cmd=ffmpeg_exe())
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors: collections.deque[str] = collections.deque(maxlen=50)
    drain = threading.Thread(target=_drain, args=(proc.stderr, errors), daemon=True)
    drain.start()
    frame_bytes = width * height * channels
    n_total = 0
    try:
        while True:
            buf = bytearray(frame_bytes * chunk_frames)
            got = _read_full(proc.stdout, buf)
            n = got // frame_bytes
            if n:
                n_total += n
                yield np.frombuffer(buf, dtype=np.uint8, count=n * frame_bytes).reshape(n, height, width, channels)
            if got < len(buf):
                break
        proc.wait()
        drain.join(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    reason = _last_error("\n".join(errors), src.input_url)
    if proc.returncode != 0:
        raise InputError(f"{src.path}: ffmpeg failed to decode it ({reason})")
    if n_total == 0:
        raise InputError(f"{src.path}: no frames could be decoded ({reason})")
    if errors and not allow_damaged:
        raise InputError(
            f"{src.path}: damaged or truncated, decoding stopped after {n_total} frames ({reason}); "
            "use --allow-damaged to keep the frames that decode"
        )
    if errors:
        log.warning("%s: damaged, kept the %d frames that decode (%s)", src.path, n_total, reason)


def _read_full(pipe, buf: bytearray) -> int:
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = pipe.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _drain(pipe, sink: collections.deque) -> None:
    for raw in iter(pipe.readline, b""):
        sink.append(raw.decode("utf-8", errors="replace").rstrip())
    pipe.close()
