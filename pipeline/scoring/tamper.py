"""Camera tampering: the view itself is wrong, and says so as its own kind of event instead of a flood of anomalies.

At training, :func:`scene_reference` keeps what the camera's normal view looks
like (``models/scene.h5``): its median picture over the training footage and,
frame by frame, how bright, how contrasted and how sharp it is and how well each
frame lines up with the median picture. At scoring, :class:`TamperCheck` looks at
every frame against that reference:

- ``covered``: the picture went dark or flat (a lens cap, a hand, a cloth, a
  blacked-out or lost signal): its contrast fell below a quarter of the normal
  view's, or its brightness below a fifth;
- ``blurred``: its contrast is there but its fine detail is gone (defocus, a
  smeared or fogged lens): sharpness below a third of the normal view's;
- ``moved``: it no longer lines up with the normal view (the camera was turned
  or knocked): the phase correlation with the median picture finds it shifted
  by more than 3% of the frame's width, or finds no match at all;
- ``shaking``: the camera moves more than :data:`SHAKING_PX` pixels a frame,
  beyond what the optical flow can follow and ``cuboids.camera_corrections``
  can take off.

A condition that lasts :data:`TAMPER_SECONDS` becomes a ``tamper`` event with
its kind (``pipeline.scoring.session``); while it lasts, and for one window and
one smoothing span after it (the models' windows still hold the tampered
frames), no frame is flagged as anomalous.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from cuboid_ad.core.artifacts import atomic_path, open_h5, recorded_config, require_config, stamp
from cuboid_ad.core.config import Config
from cuboid_ad.core.frames import iter_frames_file, read_frames_info
from cuboid_ad.cuboids.slicing import to_gray

KINDS = ("covered", "blurred", "moved", "shaking")
TAMPER_SECONDS = 1.0  # how long a condition lasts before it is an event (and how long it must be gone to end it)
SHAKING_PX = 12.0  # camera motion a frame (pixels, at its farthest point) beyond which shaking is not compensated
SAMPLE_FRAMES = 300  # training frames the reference is made of, evenly spread
_SIDE = 160  # frames are compared at most this wide (phase correlation on a small picture is fast and enough)


def gray_small(frame: np.ndarray) -> np.ndarray:
    """A working-size frame ``(H, W, C)`` as float32 gray, at most :data:`_SIDE` pixels wide."""
    import cv2

    g = to_gray(frame[None])[0].astype(np.float32)
    if g.shape[1] > _SIDE:
        g = cv2.resize(g, (_SIDE, int(round(g.shape[0] * _SIDE / g.shape[1]))), interpolation=cv2.INTER_AREA)
    return g


def sharpness(g: np.ndarray) -> float:
    """Mean absolute Laplacian: the picture's fine detail."""
    import cv2

    return float(np.abs(cv2.Laplacian(g, cv2.CV_32F)).mean())


def alignment(g: np.ndarray, reference: np.ndarray, window: np.ndarray) -> tuple[tuple[float, float], float]:
    """((dx, dy) shift in pixels of ``g``, correlation response) against the reference picture (phase correlation)."""
    import cv2

    (dx, dy), response = cv2.phaseCorrelate(reference, g, window)
    return (float(dx), float(dy)), float(response)


@dataclass(frozen=True)
class SceneReference:
    """The normal view (see the module doc): its median picture and the normal frames' medians."""

    picture: np.ndarray  # float32 gray (h, w), at most _SIDE wide
    brightness: float
    contrast: float
    sharpness: float
    response: float  # the median phase-correlation response of a normal frame against the picture

    @property
    def window(self) -> np.ndarray:
        import cv2

        return cv2.createHanningWindow(self.picture.shape[::-1], cv2.CV_32F)


def scene_reference(frames_files: list[Path]) -> SceneReference:
    """The normal view of the training footage: up to :data:`SAMPLE_FRAMES` frames evenly spread over its clips."""
    infos = [read_frames_info(p) for p in frames_files]
    total = sum(i.n_frames for i in infos)
    every = max(1, total // SAMPLE_FRAMES)
    picked, offset = [], 0
    for info in infos:
        for start, chunk in iter_frames_file(info.path):
            for k in range(len(chunk)):
                if (offset + start + k) % every == 0:
                    picked.append(gray_small(chunk[k]))
        offset += info.n_frames
    stack = np.stack(picked)
    picture = np.median(stack, axis=0).astype(np.float32)
    ref = SceneReference(picture, 0.0, 0.0, 0.0, 0.0)
    window = ref.window
    return SceneReference(
        picture,
        float(np.median(stack.mean(axis=(1, 2)))),
        float(np.median(stack.std(axis=(1, 2)))),
        float(np.median([sharpness(g) for g in stack])),
        float(np.median([alignment(g, picture, window)[1] for g in stack])),
    )


def write_scene(path: Path, ref: SceneReference, cfg: Config, **inputs: str) -> Path:
    """``scene.h5``: the picture, its medians as attributes, and ``inputs`` (what it was made from)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset("picture", data=ref.picture)
        stamp(fh.attrs, "scene", cfg, brightness=ref.brightness, contrast=ref.contrast, sharpness=ref.sharpness, response=ref.response, **inputs)
    return path


def read_scene(path: Path, cfg: Config | None = None) -> SceneReference:
    with open_h5(path, "scene") as fh:
        if cfg is not None:
            require_config("scene", recorded_config(dict(fh.attrs), path), cfg, path, "re-run `train`")
        a = fh.attrs
        return SceneReference(fh["picture"][()], float(a["brightness"]), float(a["contrast"]), float(a["sharpness"]), float(a["response"]))


class TamperCheck:
    """Every frame's tamper condition (one of :data:`KINDS`, or "") against the normal view."""

    def __init__(self, ref: SceneReference, fps: float = 10.0):
        self.ref = ref
        self.window = ref.window
        # the view's shift against the normal one, over about a second: a camera that was moved stays shifted,
        # one that shakes (and is taken care of by the corrections) goes back and forth
        self.shifts: collections.deque = collections.deque(maxlen=max(2, int(round(fps))))

    def __call__(self, frames: np.ndarray, camera_motion: np.ndarray | None = None) -> np.ndarray:
        """Frames ``(n, H, W, C)`` and the camera's motion in each (pixels a frame, or None) -> kinds ``(n,)`` (object)."""
        out = np.full(len(frames), "", dtype=object)
        r = self.ref
        for i, frame in enumerate(frames):
            g = gray_small(frame)
            if g.std() < 0.25 * r.contrast or g.mean() < 0.2 * r.brightness:
                out[i] = "covered"
            elif sharpness(g) < r.sharpness / 3.0:
                out[i] = "blurred"
            elif camera_motion is not None and camera_motion[i] > SHAKING_PX:
                out[i] = "shaking"
            else:
                shift, response = alignment(g, r.picture, self.window)
                self.shifts.append(shift)
                lasting = np.mean(self.shifts, axis=0)
                if np.hypot(*lasting) > 0.03 * g.shape[1] or response < 0.35 * r.response:
                    out[i] = "moved"
                continue
            self.shifts.clear()
        return out
