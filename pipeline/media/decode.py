"""Decoding clips with FFmpeg (through ffmpeg-python) into streams of frames.

A clip is a video file in any container ffmpeg reads, or a folder holding one
numbered image sequence (UCSD's ``001.tif`` …, ``000.jpg`` …). Both go through
the same ffmpeg filter chain (de-interlacing when the stream says it is
interlaced, optional fps resampling, then an area-averaging resize to the working
size at the display aspect ratio, then gray or RGB), so a folder and a lossless
video of the same frames decode to the same pixels. ffmpeg turns frames as the
file's rotation metadata says, as players do; audio, subtitle and data streams
are ignored; the first video stream is read unless another is asked for.

Frames come out of ffmpeg's stdout in bounded chunks, so memory does not grow
with the length of the clip, every decoded frame once (no frame duplicated or
dropped to fit a nominal rate). Each frame's time comes from its own
presentation timestamp (ffmpeg's ``showinfo`` filter), counted from the first
frame, so variable frame rates and gaps in a recording keep their true times.
ffprobe is not needed: size, aspect, rotation and rate are read from ffmpeg's
own description of the input.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import ffmpeg
import numpy as np
from PIL import Image

from cuboid_ad.core.config import ExtractConfig
from cuboid_ad.core.errors import InputError
from cuboid_ad.core.workdir import clip_id

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
    width: int  # as displayed: after rotation, square pixels
    height: int
    fps: float  # nominal rate (the frames' own timestamps give their times)
    n_frames_estimate: int  # exact for folders, from the duration for videos (0 = unknown)
    input_url: str  # what follows ffmpeg's -i
    input_options: tuple[tuple[str, str], ...] = ()
    stream: int = 0  # which video stream of the file (0 = the first)
    interlaced: bool = False  # the stream says its frames are interlaced
    rotation: float = 0.0  # degrees, from the file's display matrix
    codec: str = ""  # the video codec as ffmpeg names it ("h264", "mjpeg"; "" for image folders and live sources)

    @property
    def clip_id(self) -> str:
        return clip_id(self.path)


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
        cid = clip_id(p)
        if cid in ids:
            raise InputError(f"{folder}: clips {ids[cid].name!r} and {p.name!r} share the name {cid!r}")
        ids[cid] = p
    return clips


def open_clip(path: str | Path, cfg: ExtractConfig, stream: int = 0) -> ClipSource:
    """Describe a clip without decoding it; raises InputError for anything unusable.

    ``stream``: which of a video file's video streams to read (0 = the first).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        if stream:
            raise InputError(f"{path}: a frame folder has one video stream, not {stream + 1}")
        return _open_folder(path, cfg)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    return _open_video(path, stream)


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


_STREAM = re.compile(r"Stream #\d+:\d+\S*: (?P<type>\w+): (?P<rest>.*)")
_SIZE = re.compile(r"(?:^|[\s,])(\d{1,6})x(\d{1,6})(?=[\s,\[]|$)")
_SAR = re.compile(r"\[SAR (\d+):(\d+) DAR")
_FPS = re.compile(r"([\d.]+)(k?) (fps|tbr)")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")
_INTERLACED = re.compile(r"\((?:[^()]*, )?(?:top|bottom)(?: coded)? first")
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def _video_streams(text: str) -> list[tuple[str, list[str]]]:
    """ffmpeg's description of each video stream: its "Stream #..." line's text after "Video:", and the lines under it."""
    streams: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        m = _STREAM.search(line)
        if m:
            current = None
            if m.group("type") == "Video":
                current = []
                streams.append((m.group("rest"), current))
        elif current is not None and line.startswith("    "):  # side data, metadata: indented under their stream
            current.append(line.strip())
        else:
            current = None
    return streams


def _codec(rest: str) -> str:
    """The codec's name in a video stream's description: its first word ("h264 (High) (avc1 / ...), yuv420p, ..." -> "h264")."""
    words = rest.split(None, 1)
    return words[0].rstrip(",") if words else ""


def _nominal_fps(rest: str) -> float:
    """The stream's rate: ffmpeg's ``tbr`` (its guess of the frame rate) before ``fps`` (the container's
    average, which counts fields or empty frames in some files: "50 fps, 25 tbr")."""
    rates = {kind: float(value) * (1000 if kilo else 1) for value, kilo, kind in _FPS.findall(rest)}
    return rates.get("tbr") or rates.get("fps") or 0.0


def _open_video(path: Path, stream: int = 0) -> ClipSource:
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
    streams = _video_streams(text)
    if not streams:
        if "Input #" in text:
            raise InputError(f"{path}: has no video stream")
        raise InputError(f"{path}: not a video ffmpeg can read ({_last_error(text, url)})")
    if stream >= len(streams):
        raise InputError(f"{path}: has {len(streams)} video stream(s); --stream {stream} asks for stream {stream + 1}")
    rest, under = streams[stream]
    size = _SIZE.search(rest)
    if not size:
        raise InputError(f"{path}: ffmpeg reports no frame size for its video stream")
    width, height = int(size.group(1)), int(size.group(2))
    _check_size(path, width, height)
    sar = _SAR.search(rest)
    if sar and int(sar.group(1)) > 0 and int(sar.group(2)) > 0:  # non-square pixels: shown at their display width
        width = max(2, int(round(width * int(sar.group(1)) / int(sar.group(2)))))
    rotation = 0.0
    for line in under:
        r = _ROTATION.search(line)
        if r:
            rotation = float(r.group(1))
    if round(rotation / 90) % 2:  # a quarter turn: ffmpeg hands frames over turned, so the sides swap
        width, height = height, width
    fps = _nominal_fps(rest)
    if not 0 < fps <= 1000:
        log.warning("%s: frame rate unknown, assuming 25 fps until the frames' timestamps tell", path)
        fps = 25.0
    n_est = 0
    d = _DURATION.search(text)
    if d:
        seconds = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3))
        n_est = int(round(seconds * fps))
    return ClipSource(
        path=path, kind="video", width=width, height=height, fps=fps, n_frames_estimate=n_est, input_url=url,
        stream=stream, interlaced=bool(_INTERLACED.search(rest)), rotation=rotation, codec=_codec(rest),
    )  # fmt: skip


def _check_size(path: Path, width: int, height: int) -> None:
    if not (16 <= width <= _MAX_SIDE and 16 <= height <= _MAX_SIDE):
        raise InputError(f"{path}: frame size {width}x{height} is outside what this tool handles (16 to {_MAX_SIDE} pixels a side)")


def _last_error(text: str, url: str) -> str:
    """ffmpeg's most specific complaint: its last line that is not a generic summary."""
    lines = [re.sub(r"^(\[[^\]]*@ 0x[0-9a-f]+\] )?(\[(error|fatal|panic|warning|info)\] )?", "", ln.strip()) for ln in text.splitlines() if ln.strip()]
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
    """The nominal rate of the decoded frames (the resampling rate, or the source's)."""
    return cfg.fps or src.fps


_PTS = re.compile(r"pts_time:\s*(\S+)")
# errors, and the warnings that say data was lost ("Packet corrupt", "corrupt decoded frame"): a damaged
# stretch may give only those, the decoder's own error lines depending on how its threads met the damage
_SERIOUS = re.compile(r"\[(?:error|fatal|panic)\] |\[warning\] .*corrupt", re.IGNORECASE)
_END_OF_FILE = re.compile(r"ended prematurely|end of file|partial file|truncat", re.IGNORECASE)


class _FfmpegLog:
    """ffmpeg's stderr, read by a helper thread: each frame's presentation time (``showinfo``), and the
    errors with the number of frames that had come out before each."""

    def __init__(self, pipe):
        self.times: collections.deque[float] = collections.deque()  # not yet taken
        self.n_times = 0
        self.errors: collections.deque[tuple[int, str]] = collections.deque(maxlen=200)
        self.input_size: tuple[int, int] | None = None  # (width, height) of the input's first video stream, as stored
        self.input_codec = ""  # its codec as ffmpeg names it
        self.cond = threading.Condition()
        self.done = False
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    def _read(self, pipe) -> None:
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip()
            m = _PTS.search(line) if "showinfo" in line else None
            if self.input_size is None and not self.n_times and "Video:" in line:  # the banner, before any frame
                stream = _STREAM.search(line)
                size = _SIZE.search(stream.group("rest")) if stream and stream.group("type") == "Video" else None
                if size:
                    self.input_size = (int(size.group(1)), int(size.group(2)))
                    self.input_codec = _codec(stream.group("rest"))
            with self.cond:
                if m:
                    try:
                        t = float(m.group(1))
                    except ValueError:  # NOPTS: filled in from the neighbours by take()
                        t = float("nan")
                    self.times.append(t)
                    self.n_times += 1
                    self.cond.notify_all()
                # not elif: ffmpeg's threads can write into each other's lines ("... type:I File ended prematurely")
                if _SERIOUS.search(line) or ("showinfo" in line and (_END_OF_FILE.search(line) or "corrupt" in line)):
                    self.errors.append((self.n_times, line))
        pipe.close()
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def take(self, n: int, timeout: float = 60.0) -> list[float]:
        """The next ``n`` frames' times, waiting for ffmpeg to have logged them (it logs a frame before writing it)."""
        with self.cond:
            self.cond.wait_for(lambda: len(self.times) >= n or self.done, timeout)
            return [self.times.popleft() for _ in range(min(n, len(self.times)))]


def read_frames(
    src: ClipSource, cfg: ExtractConfig, chunk_frames: int = 64, allow_damaged: bool = False, with_times: bool = False,
    on_start: Callable[[subprocess.Popen], object] = lambda proc: None,
    on_input: Callable[[tuple[int, int] | None, str], object] = lambda size, codec: None,
) -> Iterator[np.ndarray] | Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield the clip's frames as uint8 arrays ``(n, height, width, channels)``, n <= chunk_frames, or
    with ``with_times`` pairs of those and their times ``(n,)``: seconds since the first frame.

    Raises InputError if ffmpeg fails or decodes nothing, and, after the last frame, if
    ffmpeg reported errors at the end of the file (truncated), unless ``allow_damaged``:
    then the frames that decode are kept. Errors in the middle of a file (a damaged
    stretch ffmpeg decodes past) keep the frames that decode, with a warning that names
    the stretch. ``on_start`` is handed the ffmpeg process once it runs (a live watcher
    kills it when the stream stalls); ``on_input`` the (width, height) of the input's video stream as
    ffmpeg's banner states it (None if it does not) and its codec ("" if it does not), before the first frame. A clip whose ``input_url`` is ``pipe:0`` is read
    from this process's standard input.
    """
    width, height = working_size(src, cfg)
    channels = cfg.channels
    stream = ffmpeg.input(src.input_url, **dict(src.input_options))[f"v:{src.stream}"]
    if src.interlaced:
        stream = stream.filter("yadif", mode="send_frame", deint="interlaced")
    if cfg.fps:
        stream = stream.filter("fps", fps=cfg.fps)
    # showinfo logs each frame's timestamp; the frames are then numbered (in microseconds), so that
    # no timestamp the file carries (fields, repeats, jumps) makes the raw output refuse a frame
    stream = stream.filter("scale", width, height, flags="area").filter("showinfo").filter("settb", "AVTB").filter("setpts", "N")
    out = stream.output("pipe:", format="rawvideo", pix_fmt="gray" if channels == 1 else "rgb24", fps_mode="passthrough")
    from_stdin = src.input_url == "pipe:0"
    quiet = ("-hide_banner", "-nostats", "-loglevel", "level+info")
    args = out.global_args(*(quiet if from_stdin else ("-nostdin", *quiet))).compile(cmd=ffmpeg_exe())
    proc = subprocess.Popen(args, stdin=None if from_stdin else subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    on_start(proc)
    logged = _FfmpegLog(proc.stderr)
    frame_bytes = width * height * channels
    n_total = 0
    first_time: float | None = None
    last_time = 0.0
    try:
        while True:
            buf = bytearray(frame_bytes * chunk_frames)
            got = _read_full(proc.stdout, buf)
            n = got // frame_bytes
            if n:
                frames = np.frombuffer(buf, dtype=np.uint8, count=n * frame_bytes).reshape(n, height, width, channels)
                if n_total == 0:
                    on_input(logged.input_size, logged.input_codec)
                if with_times:
                    times = np.array(logged.take(n), dtype=np.float64)
                    if len(times) < n or np.isnan(times).any():  # a frame without a timestamp: its neighbours' spacing
                        times = _fill_times(times, n, last_time if first_time is not None else None, src.fps)
                    if first_time is None:
                        first_time = float(times[0])
                    last_time = float(times[-1])
                    yield frames, times - first_time
                else:
                    yield frames
                n_total += n
            if got < len(buf):
                break
        proc.wait()
        logged.thread.join(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    errors = list(logged.errors)
    reason = _last_error("\n".join(e for _, e in errors), src.input_url)
    if proc.returncode != 0:
        raise InputError(f"{src.path}: ffmpeg failed to decode it ({reason})")
    if n_total == 0:
        raise InputError(f"{src.path}: no frames could be decoded ({reason})")
    # errors among the last frames (decoders hold several back), or the demuxer's, say the file
    # stops early; earlier ones are a damaged stretch in the middle that ffmpeg decoded past
    tail = max(8, n_total // 50)
    at_end = [e for at, e in errors if at >= n_total - tail or _END_OF_FILE.search(e)]
    inside = [(at, e) for at, e in errors if not (at >= n_total - tail or _END_OF_FILE.search(e))]
    if at_end and not allow_damaged:
        raise InputError(
            f"{src.path}: damaged or truncated, decoding stopped after {n_total} frames ({_last_error(chr(10).join(at_end), src.input_url)}); "
            "use --allow-damaged to keep the frames that decode"
        )
    if at_end:
        log.warning("%s: damaged, kept the %d frames that decode (%s)", src.path, n_total, reason)
    if inside:
        first, last = inside[0][0], inside[-1][0]
        log.warning(
            "%s: %d decoding errors between frames %d and %d (%s); kept the frames that decode, "
            "the damaged stretch's may be missing or show artefacts",
            src.path, len(inside), first + 1, last + 1, _last_error(inside[-1][1], src.input_url),
        )  # fmt: skip


def _fill_times(times: np.ndarray, n: int, before: float | None, fps: float) -> np.ndarray:
    """``n`` times where some are missing (NaN or not logged): from the last known one, a nominal frame apart."""
    out = np.full(n, np.nan)
    out[: len(times)] = times
    prev = before if before is not None else (out[0] - 1.0 / fps if np.isfinite(out[0]) else -1.0 / fps)
    for i in range(n):
        if not np.isfinite(out[i]):
            out[i] = prev + 1.0 / fps
        prev = out[i]
    return out


def _read_full(pipe, buf: bytearray) -> int:
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = pipe.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def decode_frames(video_path: str | Path, cfg, wanted: list[int], stream: int = 0) -> dict[int, np.ndarray]:
    """The frames (0-based) ``wanted`` of a clip's video ``stream``, decoded with the models' extract settings."""
    want = set(wanted)
    out: dict[int, np.ndarray] = {}
    src = open_clip(video_path, cfg.extract, stream)
    start = 0
    for chunk in read_frames(src, cfg.extract, allow_damaged=True):  # these frames were scored already
        for i in range(len(chunk)):
            if start + i in want:
                out[start + i] = chunk[i].copy()
        start += len(chunk)
        if len(out) == len(want):
            break
    return out
