"""What the camera itself does to the optical flow: its own motion (shake, sway) and its noise (night), taken out.

The models learn how things move in each part of the scene. Two things move
every pixel at once without anything in the scene moving:

- **the camera's own motion.** A camera on a pole in the wind moves the whole
  picture a few pixels a frame. The flow of every frame is fitted with one
  affine motion field (translation, rotation, zoom), by least squares
  reweighted so that what really moves in the scene does not count
  (:func:`camera_motion`), and that field is taken off the flow
  (:class:`Stabilizer`). A camera that moves less than
  :data:`STILL_CAMERA_PX` a frame anywhere in the picture is taken as still
  and its flow left exactly as it is: clean footage of a fixed camera is
  scored as before.
- **sensor noise.** At night a camera's gain rises and its frames are noisy;
  the optical flow of noise is random motion everywhere. A frame's noise level
  is measured (the smaller of Immerkær's spatial estimator, :func:`noise_sigma`,
  which fine texture inflates, and the spread of its difference from the frame
  before, which motion inflates); above
  :data:`NOISY` grey levels (daylight footage measures 1 to 2) a
  motion-adaptive temporal filter (:class:`Denoiser`, the "3D noise reduction" of
  camera processors) averages each pixel with its past while it stays within
  3 noise sigmas of it, and takes a new value at once when it changes more (a
  moving object); while it is on the noise is also read at the scale of a
  video codec's blocks (:func:`coarse_noise`): what a lossy stream leaves of
  the noise is blocky, heavy-tailed and lasts a few frames, and where it reads
  well above single pixels (:data:`REMNANT_FROM`) the gate widens with it, up
  to :data:`REMNANT_GATE` times that reading (:meth:`Denoiser.spread`). Below
  :data:`QUIET` it turns off again, unless the codec's blocks read as such a
  remnant and above :data:`COARSE_QUIET`. In a stream whose codec codes frames
  from earlier ones, an encoder that smooths the grain below :data:`NOISY`
  still leaves such blocks: there the filter also turns on while it is off
  where the blocks read :data:`COARSE_NOISY` or where still ground's own flow
  reads :data:`STILL_FLOW_NOISY` while the camera holds still
  (:meth:`Denoiser.read_still`). When the camera moves (a pole in the wind at
  night) the running mean is moved along with the
  picture first (:data:`FOLLOW_CAMERA_PX`), else it blends the picture at
  several positions and the filtered frames smear; a shift of
  :data:`CAMERA_JUMP_PX` or more between two frames (a fast shake) is read on
  the frames as they came, and the stabilizer takes that reading too, and for
  a second after it whatever its size (the flow of the denoised frames loses
  such shifts). The filter keeps
  still pixels quiet but smears what moves with less contrast than 3 noise
  sigmas, and a smeared walker's flow is short and patchy (it was all of the
  ranking lost at night on Ped2); so where something moves (:func:`movers`)
  the flow is the raw noisy frames' flow instead, which follows the mover but
  carries the noise: measured from each frame back to the one
  :data:`NIGHT_BASELINE` frames before and divided by as many
  (:func:`baseline_flow`; the noise errs a flow by about as much whatever
  the distance moved), then shortened like the still pixels', from
  :data:`RAW_FLOW_NOISE` grey levels up of the noise the filter's gate is made
  of (below, what measures as noise is as often compression artefacts, which
  the raw flow would bring back; a wider gate smears movers more).
  From :data:`DEEP_NIGHT_NOISE` up the filter smears a faint mover so much
  that its flow hardly shows it: where something moves is then also read
  from the denoised frames' flow over the same frames.
- **rain.** A raindrop is a thin bright streak in one frame only; while many
  frames' pixels are such streaks, each pixel shows the median of its last three
  frames (:class:`Derainer`).

Both run in the same place for training and for scoring, so the models see
their input made the same way, whatever the footage.
"""

from __future__ import annotations

from collections import deque

import numpy as np

STILL_CAMERA_PX = 0.1  # the camera's estimated motion a frame, anywhere in the picture, below which it counts as still
NIGHT_STILL_CAMERA_PX = 0.3  # the same while the night filter is on (see Stabilizer)
NOISY, QUIET = 3.0, 2.0  # noise sigma (grey levels) above which temporal noise reduction turns on, below which it turns off
EXPOSURE_STEP = 0.02  # a change of the picture's mean brightness between two frames beyond which the exposure is matched (log ratio)
SPIKE_LEVEL = 15  # grey levels a rain streak's pixel stands above the frames before and after it, and its neighbours
RAINY, DRY = 0.005, 0.003  # share of spike pixels above which rain is taken out, below which it stops
NOISE_FLOW_PX = 0.1  # while it is on, flow vectors are shortened by this much (pixels a frame): what noise leaves
MOVER_FLOW_PX, MOVER_MARGIN_PX = 0.5, 4  # while it is on: a mover is where its flow exceeds this (px a frame), and this many px around
NIGHT_BASELINE = 3  # while it is on, a mover's flow is its motion over this many frames, divided by as many (see baseline_flow)
RAW_FLOW_NOISE = 4.0  # noise sigma (grey levels) from which a mover's flow is that (Motion JPEG's block artefacts measure 3.1)
DEEP_NIGHT_NOISE = 12.0  # noise sigma from which movers are also read from the denoised frames' flow over NIGHT_BASELINE frames
FOLLOW_CAMERA_PX = 0.5  # the camera's shift (px) from the night filter's running mean to a new frame, read twice in a row, from which the mean follows it
FOLLOW_NEARER, FOLLOW_MARGIN = 0.75, 0.02  # ... if it brings this share of the picture's 4 x 4 blocks this much nearer the new frame than the same move back
CAMERA_JUMP_PX = 3.0  # while the night filter is on: a camera shift (px) between two raw frames from which the mean and the stabilizer take it
SHAKING_FRAMES = 10  # ... and for this many frames after one, the stabilizer whatever the shift, the mean from FOLLOW_CAMERA_PX
_GRID = 8  # flow sampled every this many pixels for the camera's motion
AWAY_FROM_MOVERS_PX, KEPT_AT_LEAST = 48, 200  # at night a moving camera's motion is fitted this far from movers, if this many samples are left
COARSE_BLOCK = 8  # the block (px) over which coarse_noise averages: H.264's transform blocks
COARSE_STILL_PX = 0.5  # a camera shift (px) between two frames from which coarse_noise reads nothing (see there)
REMNANT_GATE = 2.5  # how much wider than white grain's the night filter's gate is for a lossy stream's remnant (see Denoiser.spread)
REMNANT_FROM, REMNANT_FULL = 1.35, 1.65  # coarse_noise over single pixels' from which the gate widens, and up to which (see Denoiser.spread)
# while the filter is off, in a stream whose codec codes frames from earlier ones (Denoiser.inter_coded), the blocks
# are read on every frame pair of its first COARSE_OFF_FIRST, then on every second, and their median over the last
# COARSE_OFF_READS readings turns it on from COARSE_NOISY as a remnant: a lossy stream's encoder keeps more of the
# grain for its first second, then floods at once (a running mean 0.9 / 0.1 of every third frame took 3 s to follow;
# read on every second pair from the start, the tests' stream turned it on 0.5 s later), and a median leaves a single
# pair alone (an H.264 stream's first, a key frame). Ped2's daylight rows: at most 2.6; Motion JPEG by day reads as
# much as a lossy night, which is why the codec decides whether the blocks are read at all (docs/experiments.md)
COARSE_NOISY, COARSE_OFF_READS, COARSE_OFF_FIRST = 3.0, 5, 20
# ... and, in such a stream, still ground's own flow (the tube cutter's, after the camera corrections: its median length
# over the frame) is read on every frame while the filter is off, the median of the last STILL_READS readings turning it
# on from STILL_FLOW_NOISY px a frame: an encoder that smooths a dusk's grain below both single pixels' and the blocks'
# triggers still leaves blocks that move still ground (Ped2's daylight through H.264 reads at most 0.12, dusk through
# 100 kb/s 0.17 to 0.26, docs/experiments.md). Once on so, it stays on for STILL_HOLD frames, then while the blocks read
# STILL_COARSE_QUIET or more (a 60 kb/s night's read near 1 and dip below 0.8, where the filter turned off and on again,
# docs/experiments.md). A camera shaking by day through H.264 reads as high, and turning the filter on there cost real
# incidents: where the median of the camera's shift over the SHAKE_FRAMES frames around a frame (the translation of the
# stabilizer's estimate: a lossy dusk's grain moves its affine part, not that) reads SHAKING_PX or more, it is not read
# and the readings so far are dropped (a slow shake's ±1 px at 0.5 Hz reads 0.26 or more, Ped2's dusk and night through
# 100 and 60 kb/s at most 0.19, docs/experiments.md). The tube cutter reads it after each chunk and, where it turns the
# filter on within the chunk, cuts the chunk's rest again (TubeCutter.flow).
STILL_FLOW_NOISY, STILL_READS, STILL_HOLD, STILL_COARSE_QUIET = 0.14, 5, 20, 0.5
SHAKE_FRAMES, SHAKING_PX = 10, 0.25
COARSE_QUIET = 1.2  # the coarse noise reading below which the night filter turns off (with single pixels' below QUIET; see Denoiser)


def dis_flow(preset: str):
    """OpenCV's DIS optical flow with the named preset (``cuboids.flow_preset``: medium, fast, ultrafast)."""
    import cv2

    return cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))


def exposure_stepped(mean_previous: float, mean_current: float) -> bool:
    """Whether the picture's mean brightness changed by more than :data:`EXPOSURE_STEP` between two frames."""
    return abs(np.log((mean_current + 1.0) / (mean_previous + 1.0))) > EXPOSURE_STEP


def match_exposure(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """``previous`` as it would look with ``current``'s exposure, when the picture's brightness changed by more than
    :data:`EXPOSURE_STEP` between them (a camera's exposure or day/night switch, a light turned on or flickering);
    else ``previous`` itself. The optical flow of a brightness step is spurious motion everywhere."""
    mp, mc = float(previous.mean()), float(current.mean())
    if not exposure_stepped(mp, mc):
        return previous
    sp, sc = float(previous.std()), float(current.std())
    matched = (previous.astype(np.float32) - mp) * (sc / max(sp, 1e-3)) + mc
    return np.clip(np.rint(matched), 0, 255).astype(np.uint8)


def noise_sigma(gray: np.ndarray) -> float:
    """The standard deviation of a frame's additive noise, in grey levels (Immerkær 1996: a Laplacian difference
    that cancels smooth image structure, averaged over the frame)."""
    import cv2

    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    h, w = gray.shape
    conv = cv2.filter2D(gray.astype(np.float32), -1, k)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(conv).sum() / (6 * max(w - 2, 1) * max(h - 2, 1)))


def movers(flow: np.ndarray) -> np.ndarray:
    """Flow ``(n, H, W, 2)`` of denoised frames -> bool ``(n, H, W)``: where it moves more than
    :data:`MOVER_FLOW_PX`, and :data:`MOVER_MARGIN_PX` around (the filter's smearing shortens a mover's flow most at
    its edges, so the moving area read from it is too small)."""
    import cv2

    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * MOVER_MARGIN_PX + 1,) * 2)
    moving = (flow_length(flow) > MOVER_FLOW_PX).astype(np.uint8)
    return np.stack([cv2.dilate(m, disc) for m in moving]).astype(bool)


def baseline_flow(earlier: np.ndarray, gray: np.ndarray, baseline: int, preset: str) -> tuple[np.ndarray, np.ndarray]:
    """Gray frames ``(n, H, W)`` after ``earlier`` (the frames before them, none at a stream's start) -> each frame's
    motion over the last ``baseline`` frame pairs (fewer at a stream's start; none for its first frame), divided by
    as many, on its own pixels ``(n, H, W, 2)``: minus the optical flow from it back to the frame ``baseline``
    before; and how many pairs each spans ``(n,)``. Noise errs an optical flow by about as much whatever the
    distance moved, so over 3 frames a walker's flow carries a third of a frame pair's share of it, and it follows
    the walker (the mean of 7 pairs' flows, pixel by pixel, trailed it: on Ped2 in deep night, AUC 0.8699 against
    0.8472; ``docs/experiments.md``)."""
    dis = dis_flow(preset)
    full = np.concatenate([earlier, gray]) if len(earlier) else gray
    out = np.zeros(gray.shape + (2,), np.float32)
    spans = np.minimum(baseline, len(earlier) + np.arange(len(gray)))
    for i, n in enumerate(spans):
        if n:
            now = len(earlier) + i
            a, b = np.ascontiguousarray(full[now]), np.ascontiguousarray(full[now - n])
            out[i] = dis.calc(a, match_exposure(b, a), None) / -n
    return out, spans


def flow_length(flow: np.ndarray) -> np.ndarray:
    """Flow ``(..., 2)`` -> each vector's length ``(...)``: the same values as ``np.linalg.norm(flow, axis=-1)``,
    whose reduction over an axis of two costs six times as much (on a night clip it took 0.9 s of the cutter's 4.3)."""
    x, y = flow[..., 0], flow[..., 1]
    return np.sqrt(x * x + y * y)


def shrink_flow(flow: np.ndarray, tau: float) -> np.ndarray:
    """Flow ``(..., 2)`` with every vector shortened by ``tau`` pixels (to zero when shorter), changed in place and
    returned: what noise leaves of the optical flow of a still scene is mostly shorter than that. (In place, each
    step into one array: with temporaries, on a night clip's chunks it cost three times as much.)"""
    factor = flow_length(flow)
    np.maximum(factor, 1e-6, out=factor)
    np.divide(tau, factor, out=factor)
    np.subtract(1.0, factor, out=factor)
    np.maximum(factor, 0.0, out=factor)
    flow *= factor[..., None]
    return flow


def coarse_noise(previous: np.ndarray, current: np.ndarray, dis) -> float | None:
    """The temporal noise of two uint8 frames at the scale of a video codec's blocks, in grey levels of the white
    noise that would read alike; None when the camera moved :data:`COARSE_STILL_PX` or more between them. What an
    H.264 stream leaves of a night's noise is coarse blocks that change from frame to frame, which single pixels'
    measures (:func:`noise_sigma`, a frame difference's spread) read as 1 to 2 where the noise was 10. ``previous`` is
    matched to ``current``'s brightness and contrast and moved by the camera's shift (the median of ``dis``'s flow at
    half resolution); their difference goes through a 5 x 5 median (thin rain streaks and single pixels' grain), is
    averaged over :data:`COARSE_BLOCK` blocks, and the robust spread of the steps between neighbouring blocks (a
    change of light the matching left is smooth, the codec's remnant is not) is scaled as white noise's would be (a
    block mean of 64 pixels keeps an eighth of their noise; a step between two blocks of a difference of two frames,
    twice it)."""
    import cv2

    k = COARSE_BLOCK
    H, W = current.shape[0] // k * k, current.shape[1] // k * k
    half = [cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2), interpolation=cv2.INTER_AREA) for f in (previous, current)]
    shift = 2.0 * np.median(dis.calc(half[0], half[1], None)[::4, ::4].reshape(-1, 2), axis=0)
    if np.hypot(*shift) >= COARSE_STILL_PX:
        return None
    (mp,), (sp,) = (x.ravel() for x in cv2.meanStdDev(previous))
    (mc,), (sc,) = (x.ravel() for x in cv2.meanStdDev(current))
    a = sc / max(sp, 1e-3) if exposure_stepped(mp, mc) else 1.0
    # previous moved by the shift and matched in one pass (a gain and offset after the warp), the difference offset to 128
    moved = cv2.warpAffine(previous, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), previous.shape[::-1], flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    diff = cv2.addWeighted(current, 1.0, moved, -a, 128.0 - mc + a * mp, dtype=cv2.CV_8U)
    diff = cv2.medianBlur(diff[:H, :W], 5).astype(np.float32)
    blocks = cv2.resize(diff, (W // k, H // k), interpolation=cv2.INTER_AREA)
    steps = np.concatenate([np.diff(blocks, axis=0).ravel(), np.diff(blocks, axis=1).ravel()])
    return float(1.4826 * np.median(np.abs(steps)) * k / 2.0)


class Denoiser:
    """Motion-adaptive temporal noise reduction of gray frames, on only while they are noisy; state carried across chunks."""

    def __init__(self, strength: float = 0.25, inter_coded: bool = False):
        self.strength = strength  # how much of a new, unchanged-looking pixel is taken in (lower: smoother)
        # whether the stream's codec codes frames from earlier ones (H.264, HEVC, …; core.frames.inter_frame): only
        # then can a lossy remnant of a night's grain last, and only then are the blocks read while the filter is off
        self.inter_coded = inter_coded
        self.off_pairs = 0  # frame pairs seen while the filter is off (see COARSE_OFF_FIRST)
        self.sigma: float | None = None  # the noise level, a running mean over about a second of frames
        self.on = False
        self.smoothed: np.ndarray | None = None
        self.previous: np.ndarray | None = None  # the last frame as it came
        self.dis = dis_flow("ultrafast")  # reads the camera's shift to each new frame: from the running mean, and from the frame before
        self.shift: np.ndarray | None = None  # the shift read for the frame before (pixels; None: the filter has just turned on)
        self.jumps: list[np.ndarray | None] = []  # the last call's frames' camera shifts read as they came (see _camera_jump; None: none)
        self.shaking = 0  # frames left in which the camera's shift is read from the frames as they came (see _camera_jump)
        self.jump_samples: list[np.ndarray | None] = []  # the flow each of those readings was fitted on, as sampled (flow_grid)
        self.coarse: float | None = None  # the noise at a codec's blocks (coarse_noise) while the filter is on, a running mean
        self.off_reads: deque[float] = deque(maxlen=COARSE_OFF_READS)  # the blocks' last readings while the filter is off
        self.coarse_dis = dis_flow("ultrafast")  # reads the camera's shift for coarse_noise (its own: DIS keeps state from call to call)
        self.still_reads: deque[float] = deque(maxlen=STILL_READS)  # still ground's flow, the last readings while the filter is off
        self.still_moves = False  # they read STILL_FLOW_NOISY: the filter turns on at the next frame (see read_still)
        self.by_still_flow = False  # the filter was turned on by still ground's flow (see _keeps_on)
        self.hold = 0  # frames for which it stays on whatever single pixels and blocks read
        self.shifts: deque[float] = deque(maxlen=SHAKE_FRAMES)  # the camera's last shifts, px (see read_still)
        self.unread: deque[float | None] = deque()  # still ground's last readings, until the frames after them are known

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        """uint8 frames ``(n, H, W)`` -> the same, denoised while noisy (``active``: which of them)."""
        out = np.empty_like(gray)
        self.active = np.zeros(len(gray), bool)
        self.calmed = np.zeros(len(gray), bool)  # where still ground's flow turned the filter on (see read_still)
        self.jumps = [None] * len(gray)
        self.jump_samples = [None] * len(gray)
        for i, frame in enumerate(gray):
            # two upper bounds of the noise: the spatial estimate also counts fine texture, the temporal one
            # (frame differences, robustly) also counts motion; noise is at most the smaller
            if self.previous is not None:
                s = min(noise_sigma(frame), 1.4826 * float(np.median(np.abs(frame.astype(np.float32) - self.previous))) / np.sqrt(2.0))
                self.sigma = s if self.sigma is None else 0.9 * self.sigma + 0.1 * s
            last, self.previous = self.previous, frame.astype(np.float32)
            if self.sigma is None:  # the first frame: nothing to tell noise from texture yet
                out[i] = frame
                continue
            remnant_floods = not self.on and (self._coarse_while_off(last, frame) or self.still_moves)
            if not self.on and (self.sigma > NOISY or remnant_floods):
                # the filter starts from the frame shown last (while off, the frame as it came), which the optical flow
                # compares this one with: started from this frame's own noisy values it would show them in full, and
                # the flow of that frame pair would be all the noise (a false event at the start of every noisy clip)
                self.on, self.smoothed, self.shift, self.shaking = True, last.copy(), None, 0
                self.off_reads.clear()  # once it is off again, the blocks are read afresh
                self.by_still_flow, self.hold = self.still_moves, STILL_HOLD if self.still_moves else 0
                self.calmed[i] = self.still_moves
                self.still_reads.clear()  # likewise still ground's flow
                self.unread.clear()
                self.still_moves = False
                if not remnant_floods:  # turned on by the grain: the blocks are read afresh from here
                    self.coarse = None
            elif self.on and self.hold > 0:  # turned on by still ground's flow, while an encoder's first blocks may read quiet
                self.hold -= 1
            elif self.on and self.sigma < QUIET and not self._keeps_on():
                # a lossy stream's single pixels read below QUIET as the encoder's rate control keeps less of the grain,
                # while its remnant still moves still ground: the codec's blocks must read quiet too
                self.on = False
            self.active[i] = self.on
            if not self.on:
                out[i] = frame
                continue
            c = coarse_noise(last.astype(np.uint8), frame, self.coarse_dis)
            if c is not None:
                self.coarse = c if self.coarse is None else 0.9 * self.coarse + 0.1 * c
            self.jumps[i], self.jump_samples[i] = self._camera_jump(last, frame)
            self._follow_camera(frame, self.jumps[i])
            step = self.previous - self.smoothed
            # a pixel that changed by more than 3 noise sigmas moved: it takes its new value at once
            self.smoothed += np.where(np.abs(step) > 3.0 * self.spread(), 1.0, self.strength) * step
            out[i] = np.clip(np.rint(self.smoothed), 0, 255)
        return out

    def _coarse_while_off(self, last: np.ndarray, frame: np.ndarray) -> bool:
        """While the filter is off, in an inter-coded stream (``inter_coded``): the codec's blocks read on each of the
        first :data:`COARSE_OFF_FIRST` frame pairs, then on every second (:func:`coarse_noise`), ``coarse`` the median of the last
        :data:`COARSE_OFF_READS` readings; True when it is a lossy stream's remnant (:meth:`remnant`) of
        :data:`COARSE_NOISY` or more: an encoder that smoothed a night's grain below the trigger of single pixels
        still leaves it, and it floods. A stream of frames each coded alone (Motion JPEG, image folders) keeps no
        remnant from frame to frame, while its blocks by day read as high as a lossy night's: nothing is read."""
        if not self.inter_coded:
            return False
        self.off_pairs += 1
        if self.off_pairs > COARSE_OFF_FIRST and self.off_pairs % 2:
            return False
        c = coarse_noise(last.astype(np.uint8), frame, self.coarse_dis)
        if c is not None:
            self.off_reads.append(c)
        if len(self.off_reads) < COARSE_OFF_READS:
            return False
        self.coarse = float(np.median(self.off_reads))
        return self.coarse >= COARSE_NOISY and self.remnant() > 0.0

    def _keeps_on(self) -> bool:
        """Whether the filter stays on while single pixels read below :data:`QUIET`: turned on by still ground's flow
        (:meth:`read_still`), while the codec's blocks read :data:`STILL_COARSE_QUIET` or more; else while they read a
        lossy stream's remnant (:meth:`remnant`) of :data:`COARSE_QUIET` or more."""
        if self.coarse is None:
            return False
        if self.by_still_flow:
            return self.coarse >= STILL_COARSE_QUIET
        return self.remnant() > 0.0 and self.coarse >= COARSE_QUIET

    def read_still(self, flow: np.ndarray, active: np.ndarray, camera: list[np.ndarray] | None = None) -> int | None:
        """The flow the tube cutter cut from the frames of the last call (``flow`` ``(n, H, W, 2)``, ``active`` whether
        the filter was on in each, ``camera`` the stabilizer's estimate of the camera's motion to each): in an
        inter-coded stream, each frame's flow while the filter was off reads still ground (its median length over
        the frame, every 4th pixel each way: most of a fixed camera's picture stands still); once the median of the
        last :data:`STILL_READS` readings reaches :data:`STILL_FLOW_NOISY`, the filter turns on at the next frame, as
        a lossy stream's remnant, and the index of the frame it turns on after is returned; the frames after it are
        not read (the tube cutter cuts them again with the filter on). A frame is read only where the camera held
        still around it: where the median of its shift over :data:`SHAKE_FRAMES` frames, from half of them before
        it to half after, reads :data:`SHAKING_PX` or more, nothing is read and the readings so far are dropped. A
        reading so counts :data:`SHAKE_FRAMES` // 2 frames later: over the frames up to it, the median read a
        shake's first frames as still, and their readings turned the filter on as a shake began."""
        if not self.inter_coded:
            return None
        shifts = np.zeros(len(flow)) if camera is None else [float(np.hypot(*p[0])) for p in camera]
        off = flow[~active, ::4, ::4]
        lengths = iter(np.median(flow_length(off), axis=(1, 2)) if len(off) else ())
        for i, (on, shift) in enumerate(zip(active, shifts)):
            self.shifts.append(shift)
            self.unread.append(None if on else float(next(lengths)))
            if len(self.unread) <= SHAKE_FRAMES // 2:
                continue
            reading = self.unread.popleft()
            if np.median(self.shifts) >= SHAKING_PX:
                self.still_reads.clear()
            elif reading is not None:
                self.still_reads.append(reading)
                if len(self.still_reads) == STILL_READS and np.median(self.still_reads) >= STILL_FLOW_NOISY:
                    self.still_moves = True
                    return i
        return None

    def remnant(self) -> float:
        """How much the codec's blocks read as a lossy stream's remnant, 0 to 1: by how far :func:`coarse_noise` reads
        more than single pixels' noise, from :data:`REMNANT_FROM` times as much (0) to :data:`REMNANT_FULL` times (1).
        White grain reads 0.85 to 1.0 times as much, a Motion JPEG stream's own blocks (each frame coded alone, so
        nothing lasts) 1.03 to 1.25, what H.264 at 100 to 300 kb/s leaves of a night's grain 1.7 to 2.6 (medians per
        clip)."""
        if self.coarse is None or not self.sigma:
            return 0.0
        return float(np.clip((self.coarse / self.sigma - REMNANT_FROM) / (REMNANT_FULL - REMNANT_FROM), 0.0, 1.0))

    def spread(self) -> float:
        """The noise level (grey levels) whose 3 sigmas are the filter's gate: single pixels' (a camera's grain) or, as
        far as the codec's blocks read as a lossy stream's remnant (:meth:`remnant`; heavy-tailed and lasting a few
        frames, its refreshes got through a gate of 3 sigmas and moved still ground), up to :data:`REMNANT_GATE` times
        the blocks' reading: it grows with that share rather than jumping where the two readings cross. The wider the
        gate, the more the filter smears what moves with little contrast."""
        w = self.remnant()
        return self.sigma if w == 0.0 else self.sigma + w * (REMNANT_GATE * self.coarse - self.sigma)

    def _camera_jump(self, last: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The camera's shift ``(2,)`` from the frame before (``last``, float) to ``frame``, both as they came, when it
        reaches :data:`CAMERA_JUMP_PX` or one did in the last :data:`SHAKING_FRAMES` frames (a camera shaking that fast
        turns back every other frame, and the flow of the denoised frames misreads the 2 px it then moves); else None.
        With it, the flow it was read from as sampled on :func:`flow_grid` (:class:`Stabilizer` reads it again away
        from what moves).
        Read from their optical flow (DIS ultrafast) by :func:`camera_motion`'s robust fit, its translation: noise errs
        it little (on Ped2's still camera at night, σ 10 to 18, it never read 2 px), and a fast shake (±4 px at 3 Hz:
        7 px a frame, median) it reads within 0.2 px on average at σ 10 (0.5 at σ 18), where the flow of the denoised
        frames, smooth and each a blend of the filter's past, loses it. A limit: a crowd crossing ground whose texture
        deep-night noise hides, all one way at 4 px a frame, reads as such a shift too (docs/experiments.md)."""
        H, W = frame.shape
        ys, xs = flow_grid(H, W)
        samples = self.dis.calc(last.astype(np.uint8), np.ascontiguousarray(frame), None)[ys, xs]
        shift = fit_camera(samples, H, W)[0]
        if np.hypot(*shift) >= CAMERA_JUMP_PX:
            self.shaking = SHAKING_FRAMES
        elif self.shaking:
            self.shaking -= 1
        else:
            return None, None
        return shift, samples

    def _follow_camera(self, frame: np.ndarray, jump: np.ndarray | None) -> None:
        """Move the running mean along with the picture when the camera moved by :data:`FOLLOW_CAMERA_PX` or more
        since it: read from the optical flow between the two (DIS ultrafast, 1.2 ms) and :func:`camera_motion`'s
        robust fit, its translation. A camera that moved stays away from the mean until it is followed, so the
        reading must reach the bar in this frame and the one before, in the same direction; the move is by cubic
        interpolation (bilinear blurs the mean a little at every move). Movers lead the reading too (a disc a quarter
        of the picture; Ped2's walkers on ground whose texture deep-night noise hides: 1.0-1.4 px, frames in a row),
        so the move is kept only if it brings :data:`FOLLOW_NEARER` of the picture's 4 x 4 blocks nearer the new
        frame (mean absolute difference), by :data:`FOLLOW_MARGIN` at least, than the same shift back does (both
        smooth the mean alike), as a camera's own motion does everywhere. On Ped2 at night (σ 5 to 18) the mean of the
        still camera is never moved; shaken by ±2 px at σ 10, the still lawn's flow falls from 0.25 to 0.06 px a
        frame and the false events from 3.8 a minute to none (with a bar of 1 px). The bar is 0.5 px: at 1 px the mean
        lagged the shaking picture, and so did the denoised frames the camera's motion is read on, which
        :meth:`Stabilizer.take_off` takes off the raw frames' flow (its error 0.20 px a frame, median, at 1 px; 0.16 at
        0.5; the shaken night's ranking, AUC 0.862 at 1 px, 0.872 at 0.5; still cameras' means still never moved;
        docs/experiments.md). A ``jump`` (:meth:`_camera_jump`: while the camera shakes fast) of
        :data:`FOLLOW_CAMERA_PX` or more is taken instead of that reading, at once, with the same block check: a fast
        shake turns back within a frame or two and moves the picture 1 to 3 px on some frames, which that reading,
        needing two frames in a row the same way, did not follow; the mean then blended two views of the picture and
        the flow of the frames after it moved everywhere (on Ped2 shaken ±3 px at 2.5 Hz at night, σ 12, a quarter to
        two thirds of the frame read as moving on those frames, and 2 false events on its 16 normal clips, none when
        followed; docs/experiments.md)."""
        import cv2

        if jump is not None and np.hypot(*jump) >= FOLLOW_CAMERA_PX:
            shift, self.shift = jump, None
        else:
            mean = np.clip(np.rint(self.smoothed), 0, 255).astype(np.uint8)
            shift = camera_motion(self.dis.calc(mean, np.ascontiguousarray(frame), None))[0]
            before, self.shift = self.shift, shift
            if before is None or min(np.hypot(*shift), np.hypot(*before)) < FOLLOW_CAMERA_PX or float(np.dot(shift, before)) <= 0:
                return
        H, W = frame.shape

        def shifted(sign: int) -> np.ndarray:
            move = np.float32([[1, 0, sign * shift[0]], [0, 1, sign * shift[1]]])
            return cv2.warpAffine(self.smoothed, move, (W, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)

        moved, back = shifted(1), shifted(-1)  # the shift, and the same shift back (both smooth the mean alike)
        nearer = _blocks(np.abs(self.previous - moved)) < (1.0 - FOLLOW_MARGIN) * _blocks(np.abs(self.previous - back))
        if nearer.mean() >= FOLLOW_NEARER:
            self.smoothed = moved


def _blocks(x: np.ndarray, k: int = 4) -> np.ndarray:
    """The means of ``x`` ``(H, W)`` over a k x k grid of blocks (its last rows and columns left out when H or W is not a
    multiple of k)."""
    H, W = x.shape
    return x[: H // k * k, : W // k * k].reshape(k, H // k, k, W // k).mean(axis=(1, 3))


def _thin(x: np.ndarray) -> np.ndarray:
    """bool ``(H, W)``: where ``x`` (int16) stands half of :data:`SPIKE_LEVEL` above its neighbours two pixels to each
    side, as a thin streak does (a shaken edge or a moving object does not); never in the two columns at each edge."""
    thin = np.zeros(x.shape, bool)
    thin[:, 2:-2] = x[:, 2:-2] - np.maximum(x[:, :-4], x[:, 4:]) > SPIKE_LEVEL / 2
    return thin


class Derainer:
    """Rain streaks taken out of gray frames while it rains; state carried across chunks.

    A raindrop crosses the view within one frame's exposure: a thin bright streak in one frame, at a place that
    looks the same in the frames before and after. A pixel is such a *spike* when it is :data:`SPIKE_LEVEL` grey
    levels brighter than the same pixel in the frames before and after (which agree with each other) and than its
    neighbours two pixels to each side (a streak is thin; a shaken edge or a moving object is not). Clean footage
    has almost none (Ped2: 0.01% of its pixels, shaken by 4 px 0.12%, night noise 0.07%); rain of a hundred drops a
    frame, 1.4%. While their share, a running mean over about a second, stays above :data:`RAINY` (on; off below
    :data:`DRY`), every pixel shows the median of its last three frames: a streak is in one of them only, a moving
    object is shown a frame late. In heavy rain two of the three often hold a streak at the same pixel, which their
    median keeps (at 300 streaks of 20 px a frame, 7% of a frame's pixels are bright, 1.5% still were): where the
    median still stands :data:`SPIKE_LEVEL` above the darkest of the three and half as much above its neighbours
    two pixels to each side, as a streak does, the darkest is shown. Three frames of a camera shaking fast are three
    views of the picture: their edges read as streaks (at night, shaken ±3 px at 2.5 Hz: on for the first 3 to 4 s
    of most Ped2 clips) and their median blends the views, so frames the camera jumped to (the night filter's jump
    readings) pass as they came and the spikes are read again from the frames after them.
    """

    def __init__(self) -> None:
        self.rate: float | None = None  # share of spike pixels, a running mean over about a second
        self.on = False
        self.history: list[np.ndarray] = []  # the last two frames as they came (int16)

    def __call__(self, gray: np.ndarray, moving: np.ndarray | None = None) -> np.ndarray:
        """uint8 frames ``(n, H, W)`` -> the same, streaks taken out while it rains (``active``: which of them).
        ``moving``: bool ``(n,)``, frames the camera moved to (the night filter's jump readings, a fast shake): they
        are left as they came and the spikes are read again from the frames after them."""
        out = gray.copy()
        self.active = np.zeros(len(gray), bool)
        for i, frame in enumerate(gray):
            x = frame.astype(np.int16)
            if moving is not None and moving[i]:
                self.history = [x]
                continue
            if len(self.history) == 2:
                before, middle = self.history
                spike = (middle - np.maximum(before, x) > SPIKE_LEVEL) & (np.abs(before - x) < SPIKE_LEVEL / 3) & _thin(middle)
                share, first = float(spike.mean()), self.rate is None
                self.rate = share if first else 0.9 * self.rate + 0.1 * share
                self.on = self.rate > RAINY or (self.on and self.rate > DRY)
                if self.on:
                    self.active[i] = True
                    low = np.minimum(before, middle)
                    median, lowest = np.maximum(low, np.minimum(np.maximum(before, middle), x)), np.minimum(low, x)
                    # a streak in two of the three frames at a pixel stays in their median: where it still stands out
                    # above the darkest of the three and above its neighbours, as a streak does, the darkest is shown
                    out[i] = np.where((median - lowest > SPIKE_LEVEL) & _thin(median), lowest, median)
                    if first and i == 2:  # raining from a clip's start: its first two frames show this one, not their streaks
                        out[:2], self.active[:2] = out[2], True
            self.history = [*self.history[-1:], x]
        return out


def camera_motion(flow: np.ndarray, iterations: int = 4, keep: np.ndarray | None = None) -> np.ndarray:
    """One frame's flow ``(H, W, 2)`` -> the camera's motion as an affine field: parameters ``(3, 2)`` such that the
    flow at ``(x, y)`` is ``p[0] + u p[1] + v p[2]`` with ``u, v`` the position from the centre in frame widths and
    heights. A robust fit (iteratively reweighted least squares, Cauchy weights at 2.5 robust sigmas), so that
    objects moving in the scene do not pull it. ``keep``: bool, on the grid the flow is sampled on
    (:func:`flow_grid`), which samples the fit uses (all by default)."""
    H, W, _ = flow.shape
    ys, xs = flow_grid(H, W)
    return fit_camera(flow[ys, xs], H, W, iterations, keep)


def fit_camera(samples: np.ndarray, H: int, W: int, iterations: int = 4, keep: np.ndarray | None = None) -> np.ndarray:
    """:func:`camera_motion` of an H x W frame's flow as sampled on :func:`flow_grid` (``samples``, ``(h, w, 2)``)."""
    ys, xs = flow_grid(H, W)
    v = samples
    if keep is not None:
        ys, xs, v = ys[keep], xs[keep], v[keep]
    v = v.reshape(-1, 2).astype(np.float64)
    X = np.stack([np.ones(v.shape[0]), (xs.ravel() - (W - 1) / 2) / W, (ys.ravel() - (H - 1) / 2) / H], axis=1)
    p = np.zeros((3, 2))
    p[0] = np.median(v, axis=0)
    for _ in range(iterations):
        r = np.linalg.norm(v - X @ p, axis=1)
        w = 1.0 / (1.0 + (r / (2.5 * (1.4826 * np.median(r) + 1e-3))) ** 2)
        Xw = X * w[:, None]
        p = np.linalg.lstsq(Xw.T @ X, Xw.T @ v, rcond=None)[0]
    return p


def flow_grid(H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows and columns ``(h, w)`` each at which :func:`camera_motion` samples a frame's flow: every
    :data:`_GRID` pixels."""
    return np.mgrid[_GRID // 2 : H : _GRID, _GRID // 2 : W : _GRID]


def night_camera_motion(flow: np.ndarray) -> np.ndarray:
    """:func:`camera_motion` for a frame the night filter was on in: fitted again away from what moves. In noise,
    where the ground's texture is hidden, the optical flow carries a mover's motion tens of pixels into the ground
    around it (on Ped2 at σ 10, a frame pair's flow still reads a fifth to a third of it 32 to 64 px away), which
    pulls the fit toward the movers' motion; taken off, that shortens the movers' own flow. So where the first fit
    moves the camera by :data:`NIGHT_STILL_CAMERA_PX` or more, the samples within :data:`AWAY_FROM_MOVERS_PX` of one
    that moves more than :data:`MOVER_FLOW_PX` beyond it are left out, unless fewer than :data:`KEPT_AT_LEAST` would
    be left: a fit on fewer errs by more than the pull it avoids (fitted on 10% of 96 samples, the tests' noisy
    scenes of 96 x 64 pixels flagged 14% and, shaken, 7% of their frames, where 10% and 5% are allowed;
    docs/experiments.md). A still camera's fit is the first one."""
    p = camera_motion(flow)
    if largest_motion(p) < NIGHT_STILL_CAMERA_PX:
        return p
    H, W = flow.shape[:2]
    ys, xs = flow_grid(H, W)
    keep = away_from(flow_length(flow[ys, xs] - motion_field(p, H, W, at=(ys, xs))) > MOVER_FLOW_PX)
    return p if keep is None else camera_motion(flow, keep=keep)


def away_from(moving: np.ndarray) -> np.ndarray | None:
    """bool ``(h, w)`` on :func:`flow_grid`: where something moves -> the samples more than
    :data:`AWAY_FROM_MOVERS_PX` from it; None if fewer than :data:`KEPT_AT_LEAST` are (a fit on them would err by
    more than the movers' pull it avoids)."""
    import cv2

    r = AWAY_FROM_MOVERS_PX // _GRID
    keep = cv2.dilate(moving.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)) == 0
    return keep if keep.sum() >= KEPT_AT_LEAST else None


def jump_away_from_movers(flow: np.ndarray, samples: np.ndarray, jump: np.ndarray) -> np.ndarray:
    """A camera's ``jump`` (its motion ``(3, 2)``, a translation read by :meth:`Denoiser._camera_jump` from the raw
    frames' flow, sampled as ``samples``) read again from those samples more than :data:`AWAY_FROM_MOVERS_PX` from
    what moves by more than :data:`MOVER_FLOW_PX` in ``flow`` ``(H, W, 2)``, the denoised frames' flow once they are
    aligned by the jump (the scene's own motion); the jump itself if fewer than :data:`KEPT_AT_LEAST` samples are
    left. A walker pulls a fit of the whole frame by more than its share (on Ped2 shaken ±4 px at 3 Hz in noise of
    σ 10, a reading's error followed the movers' mean motion over the frame, 2.4 times it, correlation 0.70: 0.12 px
    toward +x on average, the way they go on average); the raw flow of movers, from which
    :meth:`Stabilizer.take_off` takes the camera's motion over 3 frames, then keeps that much of it (read again, the
    error averaged over 3 frames fell from 0.21 to 0.14 px; docs/experiments.md)."""
    H, W = flow.shape[:2]
    ys, xs = flow_grid(H, W)
    keep = away_from(flow_length(flow[ys, xs]) > MOVER_FLOW_PX)
    return jump if keep is None else np.array([fit_camera(samples, H, W, keep=keep)[0], (0.0, 0.0), (0.0, 0.0)])


def motion_field(p: np.ndarray, H: int, W: int, at: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The affine field ``(H, W, 2)`` of parameters ``p`` (see :func:`camera_motion`) on an H x W frame; or only at
    the rows and columns ``at`` (e.g. :func:`flow_grid`'s), ``(*shape, 2)``."""
    ys, xs = (np.arange(H)[:, None], np.arange(W)[None, :]) if at is None else at
    u = ((xs - (W - 1) / 2) / W)[..., None]
    v = ((ys - (H - 1) / 2) / H)[..., None]
    return (p[0] + u * p[1] + v * p[2]).astype(np.float32)


def clear_edge(flow: np.ndarray, moved_px: float) -> None:
    """Flow ``(H, W, 2)`` of a frame the camera moved ``moved_px`` pixels at most, cleared in place within that many
    pixels + 2 of its edge (at most a quarter of the frame): where the picture entered or left it nothing can be
    matched, and no motion is read there."""
    H, W = flow.shape[:2]
    m = min(int(np.ceil(moved_px)) + 2, H // 4, W // 4)
    flow[:m], flow[-m:], flow[:, :m], flow[:, -m:] = 0, 0, 0, 0


def largest_motion(p: np.ndarray) -> float:
    """How far the camera's motion ``p`` moves the picture at its farthest point (a corner), pixels a frame."""
    corners = np.array([[1, su * 0.5, sv * 0.5] for su in (-1, 1) for sv in (-1, 1)])
    return float(np.linalg.norm(corners @ p, axis=1).max())


class Stabilizer:
    """Takes the camera's own motion off every frame's flow; keeps the last chunk's (``motions``: pixels a frame at the
    farthest point) for whoever watches the camera itself.

    A frame whose camera moved is aligned with its predecessor (the predecessor warped by the camera's motion) and
    its flow computed again: what is left is the scene's own motion. Measuring it on the shaken pair and taking the
    camera's field off afterwards leaves the optical flow's own failures at large displacements (a walker read as
    jumping 8 pixels) in the flow.
    """

    def __init__(self, preset: str):
        self.dis = dis_flow(preset)
        self.motions = np.zeros(0)
        self.params: list[np.ndarray] = []  # the camera's motion estimated for each frame of the last chunk
        self.taken = np.zeros((0, 3, 2))  # what take_off takes off, a frame pair's: the last chunk's and NIGHT_BASELINE - 1 before

    def __call__(
        self,
        flow: np.ndarray,
        previous: np.ndarray,
        gray: np.ndarray,
        jumps: list | None = None,
        night: np.ndarray | None = None,
        jump_samples: list | None = None,
    ) -> np.ndarray:
        """Flow ``(n, H, W, 2)`` of gray frames ``(n, H, W)`` from each one's predecessor (``previous``: the one before
        ``gray[0]``), changed in place and returned. ``jumps``: the night filter's readings of the camera's shift
        between the frames as they came (:meth:`Denoiser._camera_jump`), taken as the camera's motion (a translation)
        where there is one; with ``jump_samples`` (the flow each was read from, as sampled), read again away from
        what moves once the frames are aligned (:func:`jump_away_from_movers`). ``night``: which frames the night
        filter was on in; there the camera counts as still below :data:`NIGHT_STILL_CAMERA_PX`: the motion estimated
        on the denoised frames of a still camera is mostly the noise's (on Ped2 at σ 10 its median is 0.11 px, at σ 18
        0.13) and passed :data:`STILL_CAMERA_PX` in 102 and 148 of 180 frames, each then aligned and measured again
        for nothing (night scoring ran at 24.9 frames a second against 28.2 without; docs/experiments.md)."""
        import cv2

        H, W = flow.shape[1:3]
        self.motions = np.zeros(len(flow))
        jumps = jumps or [None] * len(flow)
        jump_samples = jump_samples or [None] * len(flow)
        night = np.zeros(len(flow), bool) if night is None else night
        self.params = [
            np.array([j, (0.0, 0.0), (0.0, 0.0)]) if j is not None else night_camera_motion(f) if n else camera_motion(f)
            for f, j, n in zip(flow, jumps, night)
        ]
        grid_y, grid_x = np.mgrid[0:H, 0:W].astype(np.float32)
        for i in range(len(flow)):
            p = self.params[i]
            self.motions[i] = largest_motion(p)
            if self.motions[i] < (NIGHT_STILL_CAMERA_PX if night[i] else STILL_CAMERA_PX):
                continue
            field = motion_field(p, H, W)
            before = match_exposure(previous if i == 0 else gray[i - 1], gray[i])
            aligned = cv2.remap(before, grid_x - field[..., 0], grid_y - field[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            flow[i] = self.dis.calc(aligned, np.ascontiguousarray(gray[i]), None)
            flow[i] -= motion_field(camera_motion(flow[i]), H, W)  # what the alignment's interpolation left
            clear_edge(flow[i], self.motions[i])
            if jump_samples[i] is not None:
                self.params[i] = jump_away_from_movers(flow[i], jump_samples[i], p)
                self.motions[i] = largest_motion(self.params[i])
        taken = [p if m >= MOVER_FLOW_PX else np.zeros_like(p) for p, m in zip(self.params, self.motions)]
        self.taken = np.concatenate([self.taken[max(0, len(self.taken) - NIGHT_BASELINE + 1) :], np.reshape(taken, (-1, 3, 2))])
        return flow

    def take_off(self, flow: np.ndarray, spans: np.ndarray) -> np.ndarray:
        """Another flow of the last chunk's frames (``(n, H, W, 2)``, the raw noisy frames' :func:`baseline_flow`, each
        over its ``spans`` frame pairs) with the camera's motion over as many pairs (as this stabilizer estimated it
        on the denoised frames, a pair's where it reached :data:`MOVER_FLOW_PX`) subtracted, divided by as many;
        changed in place and returned. Not measured again on the raw frames: noise biases the estimate (about 1 px at
        the corners of Ped2 at night), and their pairs aligned by interpolation are no longer equally noisy. Below
        that, the estimate on noisy frames is mostly the noise's own (0.18 px at the corners, median, on Ped2 at
        night, whose camera is still), and taking it off the raw frames' flow cost the night's ranking 0.025 of AUC
        (``docs/experiments.md``).
        Where the picture entered or left the frame over the span nothing could be matched: no motion is read there,
        as in :meth:`__call__` (at night a raw flow's edge read there raised false events, docs/experiments.md)."""
        H, W = flow.shape[1:3]
        for i, (n, span) in enumerate(zip(spans, self._taken_over(spans))):
            if n and span.any():
                flow[i] -= motion_field(span.sum(axis=0) / n, H, W)
                clear_edge(flow[i], sum(largest_motion(p) for p in span))
        return flow

    def moved_early(self, spans: np.ndarray) -> np.ndarray:
        """bool ``(n,)``: which of the last chunk's frames span fewer than :data:`NIGHT_BASELINE` frame pairs (a
        stream's first frames) in which the camera moved, as :meth:`take_off` reads it. Their raw flow carries the
        noise of fewer pairs and, taken off, the camera's too: at night it raised false events where the camera shook
        from a clip's start (docs/experiments.md)."""
        return np.array([0 < n < NIGHT_BASELINE and span.any() for n, span in zip(spans, self._taken_over(spans))], bool)

    def _taken_over(self, spans: np.ndarray) -> list[np.ndarray]:
        """What was taken off each of the last chunk's frame pairs, over each frame's last ``spans`` pairs: ``(n_i, 3, 2)`` each."""
        first = len(self.taken) - len(spans)  # the chunk's first frame's place in what was taken
        return [self.taken[first + i - n + 1 : first + i + 1] for i, n in enumerate(spans)]
