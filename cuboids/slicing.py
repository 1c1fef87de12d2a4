"""Frames -> region tubes: each region's crop of every frame, resized to P x P.

A tube holds the frames' pixels, or (``model.input = "flow"``) their optical
flow: the motion of every pixel since the previous frame, computed on the
whole frame (OpenCV's DIS optical flow), cropped and resized like pixels, in
patch pixels per frame, stored in the code of :mod:`core.tubes`.

The same :class:`TubeCutter` serves the cuboid stage and scoring, so the
models see exactly the values they were trained on.
"""

from __future__ import annotations

import copy
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from cuboid_ad.core.arrays import gaussian_blur, runs
from cuboid_ad.core.config import Config
from cuboid_ad.core.frames import inter_frame
from cuboid_ad.core.grid import Region
from cuboid_ad.core.tubes import FLOW_GAIN, FLOW_ZERO
from cuboid_ad.cuboids.camera import (
    DEEP_NIGHT_NOISE,
    NIGHT_BASELINE,
    NOISE_FLOW_PX,
    RAW_FLOW_NOISE,
    Denoiser,
    Derainer,
    Stabilizer,
    baseline_flow,
    dis_flow,
    match_exposure,
    movers,
    shrink_flow,
)


@torch.inference_mode()
def crop_regions(frames: np.ndarray, regions: list[Region], patch_size: int, blur_sigma: float = 0.0) -> np.ndarray:
    """Cut every region out of ``frames`` and resize it to ``patch_size``.

    frames: uint8 ``(n_frames, height, width, channels)``.
    Returns uint8 ``(n_regions, n_frames, channels, P, P)``.
    """
    n, H, W, C = frames.shape
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (n, C, H, W)
    out = np.empty((len(regions), n, C, patch_size, patch_size), dtype=np.uint8)
    for i, (crop, _) in enumerate(_resized_crops(x, regions, patch_size, blur_sigma)):
        out[i] = crop.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


def _resized_crops(x: torch.Tensor, regions: list[Region], patch_size: int, blur_sigma: float):
    """Each region's crop of ``x`` ``(n, C, H, W)``, resized to P x P and blurred, with its box's (h, w)."""
    for region in regions:
        rows, cols = region.box
        crop = x[:, :, rows, cols]
        h, w = crop.shape[-2:]
        if (h, w) != (patch_size, patch_size):
            crop = F.interpolate(crop, size=(patch_size, patch_size), mode="bilinear", antialias=True, align_corners=False)
        yield gaussian_blur(crop, blur_sigma), (h, w)


def to_gray(frames: np.ndarray) -> np.ndarray:
    """uint8 frames ``(n, H, W, C)`` -> gray ``(n, H, W)``."""
    import cv2  # imported here: only flow models need OpenCV

    if frames.shape[-1] == 1:
        return np.ascontiguousarray(frames[..., 0])
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]) if len(frames) else np.zeros(frames.shape[:3], np.uint8)


def gray_flow(previous: np.ndarray, gray: np.ndarray, preset: str, exposure: bool = False, pool: ThreadPoolExecutor | None = None) -> np.ndarray:
    """Dense flow from each gray frame's predecessor: uint8 ``(n, H, W)`` -> float32 ``(n, H, W, 2)`` (dx, dy) in pixels;
    ``previous`` ``(H, W)`` is the frame before ``gray[0]``, ``preset`` OpenCV's DIS preset (``cuboids.flow_preset``).
    ``exposure``: a predecessor of another brightness is matched to its successor first (``cuboids.camera.match_exposure``).
    ``pool``: the later half of the frames is computed in one of its threads meanwhile (each frame pair's flow is
    its own, and OpenCV lets go of Python's lock while it computes one)."""
    out = np.empty(gray.shape + (2,), dtype=np.float32)
    half = len(gray) // 2 if pool is not None else 0
    later = pool.submit(_pair_flows, gray[half - 1], gray[half:], preset, exposure, out[half:]) if half else None
    _pair_flows(previous, gray[: half or len(gray)], preset, exposure, out)
    if later is not None:
        later.result()
    return out


def _pair_flows(previous: np.ndarray, gray: np.ndarray, preset: str, exposure: bool, out: np.ndarray) -> None:
    """:func:`gray_flow` of ``gray`` after ``previous``, written into ``out``'s first ``len(gray)`` frames."""
    dis = dis_flow(preset)
    a = np.ascontiguousarray(previous)
    for i, b in enumerate(gray):
        b = np.ascontiguousarray(b)
        out[i] = dis.calc(match_exposure(a, b) if exposure else a, b, None)
        a = b


def optical_flow(previous: np.ndarray, frames: np.ndarray, preset: str) -> np.ndarray:
    """Dense flow from each frame's predecessor: uint8 ``(n, H, W, C)`` -> float32 ``(n, H, W, 2)`` (dx, dy) in pixels.

    ``previous`` ``(H, W, C)`` is the frame before ``frames[0]``; ``preset`` names
    OpenCV's DIS preset (``cuboids.flow_preset``).
    """
    return gray_flow(to_gray(previous[None])[0], to_gray(frames), preset)


@torch.inference_mode()
def crop_flow(flow: np.ndarray, regions: list[Region], patch_size: int, blur_sigma: float = 0.0) -> np.ndarray:
    """Flow ``(n, H, W, 2)`` in frame pixels -> uint8 flow tubes ``(n_regions, n, 2, P, P)`` (see :mod:`core.tubes`)."""
    n = len(flow)
    x = torch.from_numpy(np.ascontiguousarray(flow)).permute(0, 3, 1, 2)  # (n, 2, H, W)
    out = np.empty((len(regions), n, 2, patch_size, patch_size), dtype=np.uint8)
    for i, (crop, (h, w)) in enumerate(_resized_crops(x, regions, patch_size, blur_sigma)):
        # flow in patch pixels: dx scales with the width's resize, dy with the height's
        scale = torch.tensor([patch_size / w, patch_size / h]).view(1, 2, 1, 1) * FLOW_GAIN
        out[i] = (crop * scale + FLOW_ZERO).round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


class TubeCutter:
    """Frames of one clip, chunk by chunk -> region tubes ``(n_regions, n, C, P, P)`` uint8.

    For flow tubes it carries the last frame of a chunk to the next (the first
    frame of a clip is its own predecessor: no motion) and, with
    ``cuboids.camera_corrections``, takes what the camera itself does off the
    flow (its motion, exposure steps, night noise, rain: :mod:`cuboids.camera`).
    ``stabilizer.motions``: the camera's motion in the last chunk.
    """

    @classmethod
    def for_config(cls, regions: list[Region], cfg: Config, codec: str = "") -> "TubeCutter":
        """The cutter a config's cuboid stage uses: its patch size, blur, tube content and camera corrections, for
        frames of ``codec`` (ffmpeg's name; whether it codes frames from earlier ones: :func:`core.frames.inter_frame`)."""
        c = cfg.cuboids
        return cls(regions, c.patch_size, c.blur_sigma, cfg.tube_content, c.flow_preset, c.camera_corrections, inter_frame(codec))

    def __init__(self, regions: list[Region], patch_size: int, blur_sigma: float, content: str, flow_preset: str, corrections: bool = False,
                 inter_coded: bool = False):  # fmt: skip
        if content not in ("pixels", "flow"):
            raise ValueError(f"tube content must be 'pixels' or 'flow', not {content!r}")
        self.regions = regions
        self.patch_size = patch_size
        self.blur_sigma = blur_sigma
        self.content = content
        self.flow_preset = flow_preset
        flow = content == "flow"  # the corrections act on the optical flow: pixel tubes are cut as they are
        self.stabilizer = Stabilizer(flow_preset) if corrections and flow else None
        self.denoiser = Denoiser(inter_coded=inter_coded) if corrections and flow else None
        self.derainer = Derainer() if corrections and flow else None
        self.last: np.ndarray | None = None  # the last gray frame (denoised) of the previous chunk
        self.raw_last: np.ndarray | None = None  # the last NIGHT_BASELINE gray frames as they came (see _night_flow)
        self.shown_last: np.ndarray | None = None  # the same as the flow saw them (denoised)
        self.calmed = np.zeros(0, bool)  # the last chunk's frames at which still ground's flow turned the night filter on

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if self.content == "pixels":
            return crop_regions(frames, self.regions, self.patch_size, self.blur_sigma)
        if len(frames) == 0:
            return np.zeros((len(self.regions), 0, 2, self.patch_size, self.patch_size), np.uint8)
        return crop_flow(self.flow(frames), self.regions, self.patch_size, self.blur_sigma)

    def flow(self, frames: np.ndarray) -> np.ndarray:
        """The optical flow the flow tubes are cut from: frames ``(n, H, W, C)`` -> ``(n, H, W, 2)``, with the
        camera corrections; the next call continues from the last of these frames. In a stream whose codec codes
        frames from earlier ones the night filter then reads still ground's flow
        (:meth:`cuboids.camera.Denoiser.read_still`); where that turns the filter on within the chunk, the chunk is
        cut again from where it started, up to that frame and from it on, so that the frames after it are cut with
        the filter on, as in any other chunking: each frame pair's flow is its own. Each such turn-on costs one
        chunk cut twice; a stream that never turns it on costs one reading a frame."""
        d = self.denoiser
        before = self._state() if d is not None and d.inter_coded else None
        flow = self._flow(frames)
        turn = None if before is None else d.read_still(flow, d.active, self.stabilizer.params)
        if turn is None or turn == len(frames) - 1:
            self.calmed = np.zeros(len(frames), bool) if d is None else d.calmed
            return flow
        self._restore(before)
        head = self._flow(frames[: turn + 1])
        self.denoiser.read_still(head, self.denoiser.active, self.stabilizer.params)  # as before: on from the next frame
        active, calmed, motions = self.denoiser.active, self.denoiser.calmed, self.stabilizer.motions
        tail = self.flow(frames[turn + 1 :])  # which may put back the corrections again: read them anew after
        # the chunk's, as its callers read them
        self.denoiser.active = np.concatenate([active, self.denoiser.active])
        self.stabilizer.motions = np.concatenate([motions, self.stabilizer.motions])
        self.calmed = np.concatenate([calmed, self.calmed])
        return np.concatenate([head, tail])

    def _state(self) -> tuple:
        """What :meth:`_flow` changes, copied for :meth:`_restore` (OpenCV's optical flow objects are shared: none
        keeps anything from call to call that a result depends on)."""
        shared = {id(dis): dis for dis in (self.denoiser.dis, self.denoiser.coarse_dis, self.stabilizer.dis)}
        return copy.deepcopy((self.denoiser, self.derainer, self.stabilizer, self.last, self.raw_last, self.shown_last), shared)

    def _restore(self, state: tuple) -> None:
        """Where :meth:`_state` copied it: the camera corrections are new objects."""
        self.denoiser, self.derainer, self.stabilizer, self.last, self.raw_last, self.shown_last = state

    def _flow(self, frames: np.ndarray) -> np.ndarray:
        """:meth:`flow` of frames, the night filter's reading of still ground aside."""
        raw = gray = to_gray(frames)
        if self.denoiser is not None:
            denoised = self.denoiser(raw)
            gray = self.derainer(denoised, np.array([j is not None for j in self.denoiser.jumps], bool))
        previous = gray[0] if self.last is None else self.last
        # the optical flows, each frame pair's its own, run up to three at a time: OpenCV lets go of Python's lock
        # while it computes one (at night the raw frames' flows start before the denoised frames' flow)
        earlier = raw[:0] if self.raw_last is None else self.raw_last
        shown = gray[:0] if self.shown_last is None else self.shown_last
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="flow") as pool:
            night = self._start_night_flows(pool, (earlier, raw), (shown, gray)) if self.denoiser is not None else {}
            flow = gray_flow(previous, gray, self.flow_preset, exposure=self.stabilizer is not None, pool=pool)
            self.last = gray[-1].copy()
            if self.stabilizer is not None:
                d = self.denoiser
                flow = self.stabilizer(flow, previous, gray, *(() if d is None else (d.jumps, d.active, d.jump_samples)))
            if self.denoiser is not None:
                if self.denoiser.active.any():
                    flow = self._night_flow(flow, night)
                # only the chunk's tail is kept: copying the whole chunk would cost every clean frame too
                self.raw_last = np.concatenate([earlier, raw[-NIGHT_BASELINE:]])[-NIGHT_BASELINE:]
                self.shown_last = np.concatenate([shown, gray[-NIGHT_BASELINE:]])[-NIGHT_BASELINE:]
        return flow

    def _start_night_flows(self, pool: ThreadPoolExecutor, raw: tuple[np.ndarray, np.ndarray], shown: tuple[np.ndarray, np.ndarray]) -> dict[str, Future]:
        """The :func:`cuboids.camera.baseline_flow` s that :meth:`_night_flow` will use, started in ``pool`` (the one
        place that decides which): ``"raw"``, of the raw frames, from :data:`cuboids.camera.RAW_FLOW_NOISE` up (of
        the noise the filter's gate is made of, :meth:`cuboids.camera.Denoiser.spread`), and ``"shown"``, of the
        denoised ones, from :data:`cuboids.camera.DEEP_NIGHT_NOISE` up; none by day. ``raw``, ``shown``: the frames
        before the chunk's and the chunk's, each."""
        d = self.denoiser
        if not d.active.any() or d.spread() < RAW_FLOW_NOISE:
            return {}
        started = {"raw": pool.submit(baseline_flow, *raw, NIGHT_BASELINE, self.flow_preset)}
        if d.sigma >= DEEP_NIGHT_NOISE:
            started["shown"] = pool.submit(baseline_flow, *shown, NIGHT_BASELINE, self.flow_preset)
        return started

    def _night_flow(self, flow: np.ndarray, started: dict[str, Future]) -> np.ndarray:
        """The flow of frames the denoiser filtered (``flow``, of the denoised frames): still pixels keep it, shortened by
        what noise leaves; where something moves it is the raw frames' flow over :data:`cuboids.camera.NIGHT_BASELINE`
        frames (:func:`cuboids.camera.baseline_flow`; the camera's motion that the denoised frames showed taken off),
        and shortened alike, once the noise the filter's gate is made of (:meth:`cuboids.camera.Denoiser.spread`)
        reaches :data:`cuboids.camera.RAW_FLOW_NOISE`. ``started``: those flows over 3 frames, of the raw and the
        denoised frames, as :meth:`_start_night_flows` started them (what it started says which are used). The filter
        smears a mover and shortens its flow; the raw frames' flow follows it but carries the noise, which the models
        read as unusual in normal walkers too: on Ped2 at night a frame pair's raw flow raised 1.9 false events a minute;
        measured over 3 frames and shortened, none, and it ranks the night's anomalies better than the mean of 7 pairs'
        flows or any mix of raw and filtered flows tried (a mover half of each looks unusual; docs/experiments.md).
        Where something moves is read from the denoised frames only
        (:func:`cuboids.camera.movers`: the raw frames' flow moves still ground too): from their flow, and from
        :data:`cuboids.camera.DEEP_NIGHT_NOISE` up also from their flow over the same 3 frames, which shows more of a
        faint mover the filter smeared (in less noise it only added raw flow at movers' edges)."""
        active = self.denoiser.active
        if "raw" in started:  # below RAW_FLOW_NOISE, just above the filter's threshold: the filtered flow everywhere
            raw_flow, spans = started["raw"].result()
            moving = movers(flow)
            if "shown" in started:
                moving |= movers(self.stabilizer.take_off(started["shown"].result()[0], spans))
            moving &= (active & ~self.stabilizer.moved_early(spans))[:, None, None]
            np.copyto(flow, self.stabilizer.take_off(raw_flow, spans), where=moving[..., None])
        for start, end in runs(active):  # movers' and still pixels' alike: what noise leaves
            shrink_flow(flow[start:end], NOISE_FLOW_PX)
        return flow
