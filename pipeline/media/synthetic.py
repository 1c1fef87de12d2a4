"""A small synthetic surveillance scene: the built-in example and the tests' data.

A fixed camera over a textured background. Normal activity: objects moving
along three fixed paths at steady speeds (bright discs left to right along an
upper walkway, dark squares right to left along a middle one, grey discs down
a vertical path on the left). The lower right is "grass" where nothing goes.

Test clips each hold one labelled anomaly:

- ``fast``: a disc on the upper walkway at four times the normal speed;
- ``place``: a disc wandering in the grass, where no object ever goes;
- ``shape``: a large bright cross moving along the middle walkway.

Clips are written losslessly (FFV1 in Matroska) through ffmpeg, with a
``labels.json`` in UCSD Ped2's format (1-based inclusive frame ranges).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from cuboid_ad.core.artifacts import atomic_path, write_json
from cuboid_ad.core.labels import label_ranges
from cuboid_ad.pipeline.media.decode import ffmpeg_exe

ANOMALIES = ("fast", "place", "shape")


@dataclass(frozen=True)
class Mover:
    """An object entering at frame ``start`` at ``(y0, x0)`` and moving ``(vy, vx)`` pixels per frame."""

    start: int
    y0: float
    x0: float
    vy: float
    vx: float
    radius: float
    value: int
    shape: str = "disc"  # "disc", "square" or "cross"

    def position(self, t: int) -> tuple[float, float]:
        dt = t - self.start
        return self.y0 + self.vy * dt, self.x0 + self.vx * dt


def background(height: int, width: int, seed: int = 1234) -> np.ndarray:
    """The fixed scene: a gradient, paved walkways, grass, and a little texture. float (H, W)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    bg = 90 + 40 * (y / height) + 15 * np.sin(x / width * 6.0)
    for yc in (0.25, 0.5):
        band = np.abs(y - yc * height) < 0.08 * height
        bg[band] = 120
    bg[np.abs(x - 0.2 * width) < 0.06 * width] = 120
    grass = (y > 0.65 * height) & (x > 0.45 * width)
    bg[grass] = 70 + 10 * np.sin(x[grass] / 3.0) * np.cos(y[grass] / 4.0)
    bg += rng.normal(0, 4, size=bg.shape)
    return bg


def normal_movers(n_frames: int, height: int, width: int, rng: np.random.Generator) -> list[Mover]:
    """Traffic on the three paths, with a random phase per clip."""
    movers = []
    r = 0.045 * height
    paths = [  # (y0, x0, vy, vx, value, shape, spawn period in frames)
        (0.25 * height, -r, 0.0, 0.012 * width, 220, "disc", 30),
        (0.5 * height, width + r, 0.0, -0.010 * width, 35, "square", 36),
        (-r, 0.2 * width, 0.014 * height, 0.0, 175, "disc", 28),
    ]
    for y0, x0, vy, vx, value, shape, period in paths:
        for start in range(-int(rng.integers(0, period)) - 200, n_frames, period):
            movers.append(Mover(start, y0, x0, vy, vx, r, value, shape))
    return movers


def anomaly_movers(kind: str, first: int, height: int, width: int) -> list[Mover]:
    r = 0.045 * height
    if kind == "fast":  # three fast crossings, one after the other
        return [Mover(first + k * 25, 0.25 * height, -r, 0.0, 0.048 * width, r, 220, "disc") for k in range(3)]
    if kind == "place":
        return [Mover(first, 0.72 * height, 0.55 * width, 0.003 * height, 0.004 * width, r, 200, "disc")]
    if kind == "shape":
        return [Mover(first, 0.5 * height, width + 3 * r, 0.0, -0.010 * width, 3 * r, 240, "cross")]
    raise ValueError(f"unknown anomaly {kind!r}; known: {', '.join(ANOMALIES)}")


def _draw(frame: np.ndarray, m: Mover, t: int, yy: np.ndarray, xx: np.ndarray) -> bool:
    """Paint mover ``m`` at frame ``t``; returns whether any of it is in view."""
    cy, cx = m.position(t)
    H, W = frame.shape
    y0, y1 = max(0, int(cy - m.radius) - 1), min(H, int(cy + m.radius) + 2)
    x0, x1 = max(0, int(cx - m.radius) - 1), min(W, int(cx + m.radius) + 2)
    if y0 >= y1 or x0 >= x1:
        return False
    dy, dx = np.abs(yy[y0:y1, x0:x1] - cy), np.abs(xx[y0:y1, x0:x1] - cx)
    if m.shape == "disc":
        cover = np.clip(m.radius + 0.5 - np.hypot(dy, dx), 0, 1)
    elif m.shape == "square":
        cover = np.clip(m.radius + 0.5 - np.maximum(dy, dx), 0, 1)
    else:  # a cross: two bars a third as thick as they are long
        bar = m.radius / 3
        h = np.minimum(np.clip(m.radius + 0.5 - dx, 0, 1), np.clip(bar + 0.5 - dy, 0, 1))
        v = np.minimum(np.clip(m.radius + 0.5 - dy, 0, 1), np.clip(bar + 0.5 - dx, 0, 1))
        cover = np.maximum(h, v)
    if not cover.any():
        return False
    patch = frame[y0:y1, x0:x1]
    patch *= 1 - cover
    patch += cover * m.value
    return True


def render_clip(
    n_frames: int,
    height: int,
    width: int,
    seed: int,
    anomaly: str | None = None,
    anomaly_first: int = 0,
    noise: float = 2.0,
    extra: list[Mover] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 ``(n, height, width)`` and a bool ``(n,)``: is the anomaly in view.

    ``extra``: more anomalous movers (e.g. one placed in a chosen region).
    """
    rng = np.random.default_rng(seed)
    bg = background(height, width)
    movers = normal_movers(n_frames, height, width, rng)
    odd = (anomaly_movers(anomaly, anomaly_first, height, width) if anomaly else []) + list(extra)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((n_frames, height, width), dtype=np.uint8)
    in_view = np.zeros(n_frames, dtype=bool)
    for t in range(n_frames):
        f = bg.copy()
        for m in movers:
            _draw(f, m, t, yy, xx)
        for m in odd:
            if t >= m.start:
                in_view[t] |= _draw(f, m, t, yy, xx)
        f += rng.normal(0, noise, size=f.shape)
        frames[t] = np.clip(np.round(f), 0, 255).astype(np.uint8)
    return frames, in_view


def write_video(frames: np.ndarray, path: str | Path, fps: float = 10.0) -> Path:
    """Encode uint8 frames ``(n, H, W)`` (gray) or ``(n, H, W, 3)`` (RGB) losslessly (FFV1, Matroska)."""
    n, h, w = frames.shape[:3]
    pix = "gray" if frames.ndim == 3 else "rgb24"
    path = Path(path)
    with atomic_path(path) as tmp:
        (
            ffmpeg.input("pipe:", format="rawvideo", pix_fmt=pix, s=f"{w}x{h}", framerate=fps)
            .output(str(tmp), format="matroska", vcodec="ffv1", pix_fmt="gray" if pix == "gray" else "bgr0")
            .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
            .overwrite_output()
            .run(cmd=ffmpeg_exe(), input=np.ascontiguousarray(frames).tobytes(), quiet=True)
        )
    return path


def make_dataset(
    out_path: str | Path,
    width: int = 240,
    height: int = 160,
    n_train: int = 6,
    frames_per_clip: int = 150,
    anomalies: tuple[str, ...] = ANOMALIES,
    anomaly_first: int = 50,
    fps: float = 10.0,
    seed: int = 0,
) -> Path:
    """Write ``train/``, ``test/`` and ``labels.json`` in UCSD Ped2's layout; returns ``out_path``."""
    out_path = Path(out_path)
    for i in range(n_train):
        frames, _ = render_clip(frames_per_clip, height, width, seed=seed * 1000 + i)
        write_video(frames, out_path / "train" / f"{i + 1:02d}.mkv", fps)
    labels = {}
    for j, kind in enumerate(anomalies):
        cid = f"{j + 1:02d}"
        frames, in_view = render_clip(frames_per_clip, height, width, seed=seed * 1000 + 500 + j, anomaly=kind, anomaly_first=anomaly_first)
        write_video(frames, out_path / "test" / f"{cid}.mkv", fps)
        labels[cid] = {"frames": frames_per_clip, "anomalous": label_ranges(in_view), "kind": kind}
    write_json(out_path / "labels.json", labels)
    return out_path


def make_classes(out_path: str | Path, width: int = 240, height: int = 160, clips_per_class: int = 4, frames_per_clip: int = 80,
                 fps: float = 10.0, seed: int = 0) -> Path:  # fmt: skip
    """Write ``classes/normal/`` and one folder per anomaly kind (``fast``, ``place``, ``shape``) for `supervise`.

    An anomaly clip runs from the first to the last frame its anomaly is in view
    (rendered with the anomaly entering at frame 0), so every frame of it is of its
    class; a normal clip is ``frames_per_clip`` frames of ordinary traffic.
    """
    out_path = Path(out_path) / "classes"
    for i in range(clips_per_class):
        frames, _ = render_clip(frames_per_clip, height, width, seed=seed * 1000 + 700 + i)
        write_video(frames, out_path / "normal" / f"{i + 1:02d}.mkv", fps)
        for j, kind in enumerate(ANOMALIES):
            frames, in_view = render_clip(3 * frames_per_clip, height, width, seed=seed * 1000 + 800 + 10 * j + i, anomaly=kind, anomaly_first=0)
            seen = np.flatnonzero(in_view)
            write_video(frames[seen[0] : min(seen[-1] + 1, seen[0] + frames_per_clip)], out_path / kind / f"{i + 1:02d}.mkv", fps)
    return out_path
