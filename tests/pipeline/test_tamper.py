"""Real cameras shake, get noisy at night and get tampered with: tiny clips of the tiny scene, each with one such
nuisance, scored by the product; what the camera does is taken off (no alarm flood), and a view that is itself
wrong is a tamper event of its kind, within two seconds, with no anomaly event while it lasts."""

from __future__ import annotations

import csv
import itertools
import subprocess

import cv2
import numpy as np
import pytest
from conftest import HEIGHT, WIDTH, as_motion_jpeg, injected_mover

from bench.nuisance import Nuisance, apply, write
from cuboid_ad.core.config import ExtractConfig
from cuboid_ad.core.frames import inter_frame
from cuboid_ad.core.workdir import WorkDir
from cuboid_ad.cuboids import camera
from cuboid_ad.cuboids.camera import (
    Denoiser,
    Derainer,
    Stabilizer,
    baseline_flow,
    camera_motion,
    flow_length,
    match_exposure,
    motion_field,
    movers,
    night_camera_motion,
    shrink_flow,
)
from cuboid_ad.cuboids.slicing import TubeCutter
from cuboid_ad.pipeline.media.decode import ffmpeg_exe, open_clip, read_frames
from cuboid_ad.pipeline.media.synthetic import render_clip, write_video
from cuboid_ad.pipeline.stages.score import score_video

CHANGE = 40  # the frame the nuisance starts at: 4.0 s at 10 fps


def shifted(frames: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    out = frames.copy()
    for i, (x, y) in enumerate(zip(dx, dy)):
        out[i] = cv2.warpAffine(frames[i], np.float32([[1, 0, x], [0, 1, y]]), (frames.shape[2], frames.shape[1]), borderMode=cv2.BORDER_REFLECT)
    return out


def nuisance(kind: str, frames: np.ndarray) -> np.ndarray:
    n = len(frames)
    t = np.arange(n) / 10.0
    after = np.arange(n) >= CHANGE
    if kind == "shake":  # ±2 px at 1.5 Hz: what compensation must take off
        return shifted(frames, 2 * np.sin(2 * np.pi * 1.5 * t) * after, 2 * np.cos(2 * np.pi * 1.1 * t) * after)
    if kind == "noise":  # night: darker, noisy from the start (as footage at night is)
        rng = np.random.default_rng(5)
        return np.clip(frames * 0.7 + rng.normal(0, 10, frames.shape), 0, 255).astype(np.uint8)
    if kind == "shake at night":
        return nuisance("noise", nuisance("shake", frames))
    if kind == "exposure":
        return np.where(after[:, None, None], np.clip(frames * 0.6, 0, 255), frames).astype(np.uint8)
    if kind == "moved":  # knocked 14 px to the side, and it stays there
        return shifted(frames, 14.0 * after, 0 * t)
    if kind == "covered":  # a hand over the lens from 4 s to 8 s
        out = frames.copy()
        out[CHANGE : CHANGE + 40] = 6
        return out
    if kind == "blurred":
        return np.stack([cv2.GaussianBlur(f, (0, 0), 3.0) if a else f for f, a in zip(frames, after)])
    if kind == "shaking":  # ±12 px at 3 Hz: far beyond what the flow can follow
        return shifted(frames, 12 * np.sin(2 * np.pi * 3 * t) * after, 9 * np.cos(2 * np.pi * 2.3 * t) * after)
    raise ValueError(kind)


@pytest.fixture(scope="module")
def normal_frames() -> np.ndarray:
    return render_clip(120, HEIGHT, WIDTH, seed=4242)[0]


def score(kind: str, frames: np.ndarray, work, tmp_path):
    clip = write_video(nuisance(kind, frames), tmp_path / f"{kind}.mkv")
    return score_video(clip, WorkDir(work).models, tmp_path / kind, maps=False)


def test_the_models_know_their_cameras_normal_view(trained_work):
    assert (WorkDir(trained_work).models / "scene.h5").exists()


@pytest.fixture(scope="module")
def clean(normal_frames, trained_work, tmp_path_factory):
    result = score_video(write_video(normal_frames, tmp_path_factory.mktemp("clean") / "clean.mkv"), WorkDir(trained_work).models, None)
    assert not result.tampers and result.anomalous.mean() < 0.2, "the clean clip itself is mostly quiet"
    return result


# shaken at night the tiny models flagged 30% of the frames, in the top row's regions, until the raw frames' flow at
# movers had its border cleared where the picture entered or left the frame (a large part of a tiny frame), as the
# denoised flow's is (docs/experiments.md)


@pytest.mark.parametrize("kind", ["shake", "noise", "shake at night", "exposure"])
def test_what_the_camera_does_adds_no_alarm_and_no_tamper(kind, normal_frames, clean, trained_work, tmp_path):
    result = score(kind, normal_frames, trained_work, tmp_path)
    assert not result.tampers, f"{kind} is not tampering"
    # the tiny models flag some of the clean clip itself (their threshold is set on very little footage): the
    # nuisance must not add more than a few frames to that (without the corrections, shake flags every frame after
    # it starts). Noise's own flow the tiny models barely see (without the night filter: 2 of the 120 frames
    # flagged, scores no higher than the clean clip's), so here noise tests what the chain adds (no tamper, no
    # event); the night flow itself is tested on the night disc below. At night the tiny models (of flat discs and
    # squares 6 px wide) flag 8 of the 120 frames, in 3 bursts and no event, with the movers' flow over 3 frames
    # (2 with the mean of 7 pairs' flows before it); on Ped2's normal footage at night both flag 0.0-0.2% of the
    # frames and raise no event
    allowed = 0.1 if kind == "noise" else 0.05
    assert result.anomalous.mean() <= clean.anomalous.mean() + allowed, f"{kind}: {result.anomalous.mean():.2f} flagged"
    assert len(result.events) <= len(clean.events), f"{kind}: {[(e.start_s, e.peak_score, e.regions) for e in result.events]}"


@pytest.mark.parametrize("kind", ["moved", "covered", "blurred", "shaking"])
def test_a_tampered_view_is_a_tamper_event_within_two_seconds_and_no_anomaly(kind, normal_frames, trained_work, tmp_path):
    result = score(kind, normal_frames, trained_work, tmp_path)
    assert result.tampers, f"no tamper event for {kind}"
    first = result.tampers[0]
    assert kind in first.regions and first.kind == "tamper"
    assert CHANGE / 10.0 <= first.start_s and first.start_s + 1.0 <= CHANGE / 10.0 + 2.0, "announced (a second after it starts) within 2 s"
    for e in result.events:
        assert e.end_s < first.start_s or e.start_s > first.end_s, f"an anomaly event during the tampering: {e}"
    with open(tmp_path / kind / "events.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert any(r["kind"] == "tamper" and kind in r["regions"] for r in rows)
    with open(tmp_path / kind / "scores.csv", newline="") as fh:
        flags = [(r["tamper"], int(r["anomalous"])) for r in csv.DictReader(fh)]
    assert all(a == 0 for k, a in flags if k), "no tampered frame is flagged as anomalous"


def test_scoring_resumes_when_the_view_is_back(normal_frames, trained_work, tmp_path):
    frames = render_clip(160, HEIGHT, WIDTH, seed=4243, anomaly="fast", anomaly_first=120)[0]
    result = score("covered", frames, trained_work, tmp_path)
    (cover,) = result.tampers
    assert cover.end_s < 8.5
    assert any(e.start_s >= 12.0 for e in result.events), "the anomaly after the cover is found"


def test_camera_motion_is_estimated_and_taken_off():
    rng = np.random.default_rng(0)
    flow = rng.normal(0, 0.05, (60, 80, 2)).astype(np.float32) + np.float32([1.5, -0.7])
    flow[20:30, 30:40] = [6.0, 0.0]  # something moving in the scene does not pull the estimate
    p = camera_motion(flow)
    assert np.allclose(p[0], [1.5, -0.7], atol=0.05) and np.abs(p[1:]).max() < 0.1
    rest = flow - motion_field(p, 60, 80)
    assert np.abs(rest[40:]).mean() < 0.06 and rest[25, 35, 0] > 4


def walker_spread_into_the_ground(H: int, W: int, camera_px: tuple[float, float]) -> np.ndarray:
    """Flow ``(H, W, 2)`` of a camera moving ``camera_px`` and a walker (a disc of radius 18 px at x 90, y 150)
    moving 2 px further to the right, whose motion the flow carries into the ground around it, fading over 25 px,
    with 0.15 px of noise."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    d = np.hypot(xx - 90, yy - 150) - 18  # distance from the walker's disc
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0] = np.where(d <= 0, 2.0, 2.0 * np.exp(-np.maximum(d, 0) / 25.0))
    return flow + np.random.default_rng(0).normal(0, 0.15, flow.shape).astype(np.float32) + np.float32(camera_px)


def test_at_night_the_camera_s_motion_is_fitted_away_from_what_moves():
    """In noise, the optical flow carries a walker's motion into the ground around it (on Ped2 at σ 10, a fifth to a
    third of it 32 to 64 px away): modelled here as its flow fading over 25 px. The whole frame's robust fit is pulled
    toward the walker by 0.13 px; fitted away from it, as at night, by less than 0.05, and the stabilizer takes that
    fit for frames the night filter was on in only."""
    H, W = 240, 360
    flow = walker_spread_into_the_ground(H, W, (0.6, -0.4))
    assert abs(camera_motion(flow)[0, 0] - 0.6) > 0.1, "the spread motion pulls a fit over the whole frame"
    assert np.abs(night_camera_motion(flow)[0] - [0.6, -0.4]).max() < 0.05
    frames = np.random.default_rng(1).integers(0, 255, (2, H, W), dtype=np.uint8)
    for night, near in ((True, True), (False, False)):
        stabilizer = Stabilizer("ultrafast")
        stabilizer(flow[None].copy(), frames[0], frames[1:], night=np.array([night]))
        assert (np.abs(stabilizer.params[0][0] - [0.6, -0.4]).max() < 0.05) == near, f"night={night}"


def test_a_fast_shake_read_at_night_is_read_again_away_from_what_moves():
    """A shift of the camera read on the raw night frames (a fast shake) is pulled toward a walker like any fit of
    the whole frame (modelled as in the test above: the walker's flow fading over 25 px around it). Once the
    stabilizer has aligned the frames by it, the walker shows in their flow, and the shift is read again from the
    same samples away from it: off by less than half as much as the first reading (0.13 px off; away from the walker
    its modelled motion still pulls a little)."""
    H, W = 240, 360
    raw = walker_spread_into_the_ground(H, W, (3.0, -2.0))
    ys, xs = camera.flow_grid(H, W)
    jump = camera_motion(raw)[0]
    first = np.hypot(*(jump - [3.0, -2.0]))
    assert first >= 0.1, "the spread motion pulls the first reading"
    ground = cv2.GaussianBlur(np.random.default_rng(1).normal(128, 60, (H + 20, W + 20)).astype(np.float32), (0, 0), 2)
    yy, xx = np.mgrid[0:H, 0:W]
    walker = np.hypot(xx - 86, yy - 150) <= 18
    before = np.clip(ground[10 : 10 + H, 10 : 10 + W], 0, 255)
    after = np.clip(ground[12 : 12 + H, 7 : 7 + W], 0, 255)  # the camera moved 3 px right and 2 up
    before[walker] = 230
    after[np.roll(walker, 5, axis=1)] = 230  # the walker 2 px further on the ground
    frames = np.stack([before, after]).astype(np.uint8)
    for samples, near in ((raw[ys, xs], True), (None, False)):
        stabilizer = Stabilizer("medium")  # the frames' flow is measured again once they are aligned by the jump
        stabilizer(np.zeros((1, H, W, 2), np.float32), frames[0], frames[1:], jumps=[jump], night=np.array([True]), jump_samples=[samples])
        assert (np.hypot(*(stabilizer.params[0][0] - [3.0, -2.0])) < 0.5 * first) == near, f"read again: {samples is not None}"


def test_a_still_camera_and_a_quiet_frame_are_left_exactly_as_they_are(normal_frames):
    gray = normal_frames[:20]
    assert np.array_equal(Denoiser()(gray), gray), "a quiet clip is not denoised"
    assert np.array_equal(Derainer()(gray), gray), "a dry clip is not derained"
    flow = np.random.default_rng(1).normal(0, 0.02, (3, HEIGHT, WIDTH, 2)).astype(np.float32)
    assert np.array_equal(Stabilizer("medium")(flow.copy(), gray[0], gray[1:4]), flow), "a still camera's flow is untouched"
    first = gray[0]
    assert match_exposure(first, gray[1]) is first, "a steady exposure is not matched"
    darker = (gray[1] * 0.6).astype(np.uint8)
    assert abs(float(match_exposure(gray[0], darker).mean()) - float(darker.mean())) < 1.0


def test_noise_reduction_starts_without_a_jump(normal_frames):
    """A clip noisy from its first frame: the frames shown change no more from the first to the second than later on
    (started from the second frame's own noise, the filter showed all of it, and that frame pair's flow raised a
    false event at the start of every noisy clip)."""
    still = np.repeat(normal_frames[:1], 30, axis=0).astype(np.float32)
    noisy = np.clip(still * 0.7 + np.random.default_rng(6).normal(0, 10, still.shape), 0, 255).astype(np.uint8)
    shown = Denoiser()(noisy).astype(np.float32)
    change = np.abs(np.diff(shown, axis=0)).mean(axis=(1, 2))  # mean change from each frame to the next
    assert change[10:].max() < 0.5 * np.abs(np.diff(noisy.astype(np.float32), axis=0)).mean(), "the filter is on"
    assert change[0] <= 2.0 * np.median(change[10:]), f"first step {change[0]:.2f}, later {np.median(change[10:]):.2f}"


def night_disc(pan: bool = False, light: float = 0.7, noise: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """A textured disc moving 2 px a frame to the right, 30 grey levels brighter than its textured ground on average
    in daylight, with ``pan`` the camera jerking down 2 px every other frame: 40 frames ``(n, H, W, 1)`` darkened to
    ``light`` (night: 0.7, 21 grey levels), and the same in noise of ``noise`` grey levels."""
    H, W, n = 96, 128, 40
    rng = np.random.default_rng(0)

    def texture(sigma: float) -> np.ndarray:
        t = cv2.GaussianBlur(rng.normal(0, 1, (H, W)).astype(np.float32), (0, 0), sigma)
        return 25 * t / t.std()

    ground, skin = 110 + texture(2.0), texture(1.5)
    yy, xx = np.mgrid[0:H, 0:W]
    frames = np.empty((n, H, W, 1), np.float32)
    for t in range(n):
        frame = ground.copy()
        disc = (xx - 20 - 2 * t) ** 2 + (yy - 48) ** 2 < 12**2
        frame[disc] = 140 + np.roll(skin, 2 * t, axis=1)[disc]
        frames[t, ..., 0] = np.roll(frame, 2 * ((t + 1) // 2) if pan else 0, axis=0)
    dark = np.clip(frames * light, 0, 255).astype(np.uint8)
    noisy = np.clip(frames * light + np.random.default_rng(5).normal(0, noise, frames.shape), 0, 255).astype(np.uint8)
    return dark, noisy


def disc_motion(night: np.ndarray) -> np.ndarray:
    """The night disc's mean flow ``(dx, dy)`` in each frame of ``night`` from the 10th (the filter on), taken where
    the flow exceeds 1 px."""
    motion = []
    for t, flow in enumerate(night[10:], 10):
        disc = np.linalg.norm(flow, axis=-1) > 1.0
        assert disc.sum() > 200, f"the disc's flow is seen in frame {t}"
        motion.append(flow[disc].mean(axis=0))
    return np.array(motion)


def night_flow(clip: np.ndarray, inter_coded: bool = False) -> tuple[np.ndarray, TubeCutter, np.ndarray]:
    """The flow the flow tubes of ``clip`` are cut from, in chunks of 10 frames, with the camera corrections (for a
    stream whose codec codes frames from earlier ones: ``inter_coded``); the cutter; and which frames the night filter
    was on in (the denoiser's ``active`` holds the last chunk's only)."""
    cutter = TubeCutter([], 16, 0.0, "flow", "medium", corrections=True, inter_coded=inter_coded)
    flow, active = [], []
    for i in range(0, len(clip), 10):
        flow.append(cutter.flow(clip[i : i + 10]))
        active.append(cutter.denoiser.active)
    return np.concatenate(flow), cutter, np.concatenate(active)


def test_at_night_what_moves_keeps_its_flow_and_what_stands_still_stays_quiet():
    """The night disc: the temporal filter alone smears it (its flow kept 53% of its length, 0.74 px wrong, 0.11 rad
    off its direction), so where the filtered frames show motion the flow is the raw frames' measured over 3 frames
    (89%, 0.21 px, 0.05 rad); still ground keeps the filtered frames' flow. Measured over 3 frames, it jumps 0.17 px
    from frame to frame where the true flow changes 0.12 (the mean of 7 pairs' flows built before it: 0.10, but it
    kept 61% and was 0.61 px wrong)."""
    dark, noisy = night_disc()
    truth, _, quiet = night_flow(dark)
    night, _, active = night_flow(noisy)
    assert not quiet.any() and active[10:].all(), "the filter is on at night only"
    length = np.linalg.norm(truth, axis=-1)[10:]
    moving, still = length > 1.0, length < 0.2
    got = np.linalg.norm(night, axis=-1)[10:]
    error = np.linalg.norm(night - truth, axis=-1)[10:]
    assert got[moving].mean() > 0.8 * length[moving].mean(), f"the mover's flow kept {got[moving].mean() / length[moving].mean():.0%}"
    assert error[moving].mean() < 0.3, f"the mover's flow is {error[moving].mean():.2f} px wrong"
    angle = np.arctan2(night[..., 1], night[..., 0])[10:] - np.arctan2(truth[..., 1], truth[..., 0])[10:]
    assert np.abs(angle[moving]).mean() < 0.065, f"the mover's flow is {np.abs(angle[moving]).mean():.3f} rad off"
    both = moving[1:] & moving[:-1]
    jump = np.linalg.norm(night[11:] - night[10:-1], axis=-1)[both].mean()
    assert jump < 0.2, f"the mover's flow jumps {jump:.3f} px from one frame to the next"
    assert got[still].mean() < 0.05, f"still ground moves {got[still].mean():.3f} px a frame"
    # the filtered frames' flow shows a smeared mover too small: the raw frames' flow is taken 4 px around what it shows
    spot = np.zeros((1, 21, 21, 2), np.float32)
    spot[0, 10, 10] = [0.6, 0.0]
    around = movers(spot)[0]
    assert around[10, 14] and around[14, 10] and not around[10, 15] and not movers(spot * 0.5).any()


def disc_flow_against(flow: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """The night disc's flow against its true flow: the share of its length kept and how far it is wrong (px, mean)
    where it moves more than 1 px a frame, and how far still ground (below 0.2 px) moves (px a frame, mean)."""
    length = np.linalg.norm(truth, axis=-1)
    moving, still = length > 1.0, length < 0.2
    got = np.linalg.norm(flow, axis=-1)
    return got[moving].mean() / length[moving].mean(), np.linalg.norm(flow - truth, axis=-1)[moving].mean(), got[still].mean()


def decoded(clip, height: int) -> np.ndarray:
    """A clip's frames as read at their own ``height``, ``(n, height, W, channels)``."""
    cfg = ExtractConfig(frame_height=height)
    return np.concatenate(list(read_frames(open_clip(clip, cfg), cfg)))


def streamed(frames: np.ndarray, kbps: int, folder) -> np.ndarray:
    """Gray frames ``(n, 96, 128)`` sent through H.264 at ``kbps`` (a congested stream) and read back ``(n, 96, 128, 1)``."""
    return decoded(write(Nuisance("lossy", "bitrate", {"kbps": kbps}), frames, folder / "stream"), 96)


def test_a_lossy_night_stream_s_remnant_does_not_get_through_the_filter(tmp_path):
    """Textured ground in late night (σ 16, 55% of the light) through H.264 at 20 kb/s (0.16 bit a pixel a frame):
    single pixels read 3.3, so the filter is on, but what the encoder leaves of the noise is blocky, heavy-tailed and
    lasts a few frames, and with a gate of 3 σ of single pixels it got through and moved still ground 0.078 px a frame
    over the last 3 s. The codec's blocks read 6.5, and the gate 2.5 times that keeps it at 0.0024 (1.5 times: 0.0066;
    once that reading: 0.022)."""
    still = np.repeat(110 + textured_ground(3)[None], 60, axis=0)
    night = np.clip(still * 0.55 + np.random.default_rng(8).normal(0, 16, still.shape), 0, 255).astype(np.uint8)
    flow, cutter, active = night_flow(streamed(night, 20, tmp_path))
    assert cutter.denoiser.sigma > camera.QUIET and active[-30:].all(), f"the filter is off ({cutter.denoiser.sigma:.2f})"
    assert cutter.denoiser.coarse > cutter.denoiser.sigma, "the codec's blocks read more than single pixels"
    moved = np.linalg.norm(flow, axis=-1)[-30:, 8:-8, 8:-8].mean()
    assert moved < 0.01, f"still ground moves {moved:.4f} px a frame"


def test_a_lossy_night_stream_s_mover_keeps_its_flow(tmp_path):
    """The night disc at σ 13 (60% of the light) through H.264 at 25 kb/s: the remnant's wide gate (a spread of 14
    grey levels) smears the disc more, and where it moves the flow is the raw frames' over 3 frames: it keeps 65% of
    its flow's length, 0.59 px wrong (with the gate of single pixels, 69% and 0.54 px, but still ground moved 0.048 px
    a frame; at σ 16, 41%: a lossy stream's faint mover in deep night loses some of its flow)."""
    dark, noisy = night_disc(light=0.6, noise=13.0)
    flow, cutter, active = night_flow(streamed(noisy[..., 0], 25, tmp_path))
    assert active[1:].all() and cutter.denoiser.spread() > camera.RAW_FLOW_NOISE, "the filter is on, its gate wider than the grain's"
    kept, error, still = disc_flow_against(flow[active], night_flow(dark)[0][active])
    assert kept > 0.6, f"the mover's flow kept {kept:.0%}"
    assert error < 0.65, f"the mover's flow is {error:.2f} px wrong"
    assert still < 0.005, f"still ground moves {still:.4f} px a frame"


@pytest.mark.parametrize("seed", [777, 3])
def test_a_motion_jpeg_stream_by_day_keeps_the_gate_of_single_pixels(tmp_path, seed):
    """The tiny synthetic scene (its mover among it) streamed as Motion JPEG, as the RTSP camera test streams it
    (seed 777): its block artefacts read σ 3 on single pixels, so the filter is on, and its blocks 1.03 to 1.25 times
    as much (each frame is coded alone, so nothing of them lasts, unlike a lossy night's remnant at 1.7 to 2.6): the
    gate stays single pixels'. With a gate that jumped to 2.5 times the blocks' reading where it passed single
    pixels', the mover's region lost its event in that test."""
    frames, _ = render_clip(80, HEIGHT, WIDTH, seed=seed, extra=[injected_mover()])
    write_video(frames, tmp_path / "scene.mkv")
    clip = decoded(as_motion_jpeg(tmp_path / "scene.mkv", tmp_path / "mjpeg.avi"), HEIGHT)[..., :1]
    cutter, read = TubeCutter([], 16, 0.0, "flow", "medium", corrections=True), []
    for i in range(0, len(clip), 10):
        cutter.flow(clip[i : i + 10])
        d = cutter.denoiser
        read.append((d.active.all(), d.coarse or 0.0, d.sigma, d.spread()))
    on, coarse, sigma, spread = np.array(read[2:]).T
    assert on.all() and (sigma > camera.QUIET).all(), f"the filter is on by the blocks' σ {sigma.round(2)}"
    assert (coarse > 0.9 * sigma).all() and (coarse < camera.REMNANT_FROM * sigma).all(), f"blocks read {(coarse / sigma).round(2)} times single pixels'"
    assert np.array_equal(spread, sigma), f"the gate's noise {spread.round(2)} against single pixels' {sigma.round(2)}"


@pytest.mark.parametrize("seed", [8, 9])
def test_a_lossy_night_stream_whose_grain_reads_faint_turns_the_filter_on_by_its_blocks(tmp_path, seed, monkeypatch):
    """Still ground in late night (σ 14, half the light) through H.264 at 14 kb/s (0.11 bit a pixel a frame): the
    encoder smooths the grain so that single pixels read σ 1.8 to 2.1, below the filter's trigger, while its blocky
    remnant moved still ground 0.13 px a frame with the filter off. The codec's blocks, read while the filter is off,
    read 3.8 to 4.1 and turn it on within 1.7 s; still ground then stays still. The tests' scene by day through H.264
    at 12 kb/s reads 3.4 on its first frame pair and 5.7 on one later, 0.5 to 2 otherwise: the median of the last
    readings leaves those alone, and the blocks leave the filter off. (Its faint, grainy ground's own flow reads 0.14
    to 0.22 px a frame even losslessly, which turns the filter on by still ground's flow: that trigger is left out
    here.)"""
    monkeypatch.setattr(camera, "STILL_FLOW_NOISY", float("inf"))  # the blocks alone (see the docstring)
    still = np.repeat(110 + textured_ground(3)[None], 60, axis=0)
    night = np.clip(still * 0.5 + np.random.default_rng(seed).normal(0, 14, still.shape), 0, 255).astype(np.uint8)
    stream = streamed(night, 14, tmp_path)
    flow, cutter, active = night_flow(stream, inter_coded=True)
    assert cutter.denoiser.sigma < camera.NOISY, f"single pixels read {cutter.denoiser.sigma:.2f}: the grain's trigger would turn it on"
    assert active[20:].all(), f"the filter is off in frames {np.flatnonzero(~active[20:]) + 20}"
    moved = np.linalg.norm(flow, axis=-1)[-30:, 8:-8, 8:-8].mean()
    assert moved < 0.01, f"still ground moves {moved:.4f} px a frame"
    assert not night_flow(stream)[2].any(), "the blocks were read in a stream whose frames are each coded alone"
    frames, _ = render_clip(60, HEIGHT, WIDTH, seed=777, extra=[injected_mover()])
    day = decoded(write(Nuisance("lossy", "bitrate", {"kbps": 12}), frames, tmp_path / "day"), HEIGHT)
    assert not night_flow(day[..., :1], inter_coded=True)[2].any(), "by day a single frame pair's reading turned the filter on"


@pytest.mark.parametrize(
    "readings, first_on",
    [
        ([1.0, 1.0, 20.0, 1.0, 1.0], None),  # one pair far above the rest (an H.264 stream's key frame): their mean 4.8
        ([1.0, 20.0, 1.0, 20.0, 1.0], None),  # two of five: their mean 8.6
        ([1.0, 1.0, 1.0, 4.0, 4.0, 4.0], 6),  # lasting: on once three of the last five read it
    ],
)
def test_the_codec_s_blocks_turn_the_filter_on_by_the_median_of_their_last_readings(monkeypatch, readings, first_on):
    """While the filter is off in an inter-coded stream, the codec's blocks turn it on by the median of their last
    COARSE_OFF_READS readings (each frame pair's :func:`cuboids.camera.coarse_noise`, scripted here; the last listed one
    after them): one or two pairs that read far above the rest leave it off, which their mean would not; the same
    reading lasting turns it on at the frame whose pair makes it the median. Single pixels read σ 1 throughout."""
    still = np.repeat(110 + textured_ground(3)[None], 30, axis=0)
    gray = np.clip(still + np.random.default_rng(0).normal(0, 1.0, still.shape), 0, 255).astype(np.uint8)
    scripted = itertools.chain(readings, itertools.repeat(readings[-1]))
    monkeypatch.setattr(camera, "coarse_noise", lambda *args: next(scripted))
    denoiser = Denoiser(inter_coded=True)
    denoiser(gray)
    assert denoiser.sigma < camera.QUIET, f"single pixels read {denoiser.sigma:.2f}"
    on = np.flatnonzero(denoiser.active)
    if first_on is None:
        assert len(on) == 0, f"the filter is on from frame {on[0]}: a reading or two far above the rest turned it on"
    else:
        assert len(on) and on[0] == first_on and denoiser.active[first_on:].all(), f"the filter is on in frames {on}, from frame {first_on} asked"


def lossy_dusk(n: int, seed: int, folder) -> tuple[np.ndarray, np.ndarray]:
    """Faint ground (its texture's spread 5 grey levels) by day, ``n`` frames, and the same at dusk (σ 5, 85% of the
    light) through H.264 at 20 kb/s, decoded."""
    ground = np.repeat(110 + 0.2 * textured_ground(3)[None], n, axis=0)
    dusk = np.clip(ground * 0.85 + np.random.default_rng(seed).normal(0, 5, ground.shape), 0, 255).astype(np.uint8)
    return ground, streamed(dusk, 20, folder)


@pytest.mark.parametrize("seed", [8, 9])
def test_a_lossy_dusk_stream_whose_grain_and_blocks_read_quiet_turns_the_filter_on_by_still_ground_s_flow(tmp_path, seed):
    """Faint ground (its texture's spread 5 grey levels) at dusk (σ 5, 85% of the light) through H.264 at 20 kb/s:
    single pixels read σ 1.0 and the codec's blocks stay below their trigger, so neither turns the filter on, while
    what the encoder leaves of the grain moved still ground 0.21 to 0.23 px a frame. Still ground's own flow, read
    while the filter is off, turns it on within 1.5 s, and still ground then stands still. The same ground by day
    through the same stream reads nothing and leaves it off. Cut in one call, the filter turns on at the same frame
    as in chunks of 10 frames, the call's frames after it are cut again with the filter on (the same flow as two
    calls split there), the camera's motion is the whole call's, and the cutter says at which frame still ground's
    flow turned the filter on (the scoring session settles the stretch around it)."""
    ground, stream = lossy_dusk(60, seed, tmp_path)
    flow, cutter, active = night_flow(stream, inter_coded=True)
    assert cutter.denoiser.sigma < camera.QUIET, f"single pixels read {cutter.denoiser.sigma:.2f}"
    assert cutter.denoiser.by_still_flow, "still ground's flow turned the filter on"
    assert active[15:].all(), f"the filter is off in frames {np.flatnonzero(~active[15:]) + 15}"
    moved = np.linalg.norm(flow, axis=-1)[-30:, 8:-8, 8:-8].mean()
    assert moved < 0.01, f"still ground moves {moved:.4f} px a frame"
    whole = TubeCutter([], 16, 0.0, "flow", "medium", corrections=True, inter_coded=True)
    whole_flow = whole.flow(stream)
    assert np.array_equal(whole.denoiser.active, active), "cut in one call of 60 frames, the filter is on where in chunks of 10"
    assert len(whole.stabilizer.motions) == len(stream), "the camera's motion of every frame of the call"
    turn = np.flatnonzero(active)[0]
    assert np.array_equal(np.flatnonzero(whole.calmed), [turn]), "the frame still ground's flow turned it on at"
    split = TubeCutter([], 16, 0.0, "flow", "medium", corrections=True, inter_coded=True)
    assert np.array_equal(whole_flow, np.concatenate([split.flow(stream[:turn]), split.flow(stream[turn:])])), "cut again from the turn-on"
    day = streamed(ground.astype(np.uint8), 20, tmp_path / "day")
    assert not night_flow(day, inter_coded=True)[2].any(), "by day still ground's flow turned the filter on"


def test_turn_ons_by_still_ground_s_flow_within_one_call_are_those_of_any_chunking(tmp_path, monkeypatch):
    """The lossy dusk stream of the test above, 80 frames, its codec's blocks scripted to read quiet (0.3): still
    ground's flow turns the filter on, it stays on for STILL_HOLD frames, turns off, and still ground's flow turns it
    on again, three times within one call of 80 frames. Each turn-on cuts the rest of the call again, each from where
    the one before left the camera corrections: the frames the filter is on in and those it turned on at are those of
    chunks of 10, and the flow is that of calls split at each."""
    monkeypatch.setattr(camera, "coarse_noise", lambda *args: 0.3)
    _, stream = lossy_dusk(80, 9, tmp_path)
    active = night_flow(stream, inter_coded=True)[2]
    whole = TubeCutter([], 16, 0.0, "flow", "medium", corrections=True, inter_coded=True)
    flow = whole.flow(stream)
    turns = np.flatnonzero(whole.calmed)
    assert len(turns) == 3, f"still ground's flow turned the filter on at frames {turns}"
    assert np.array_equal(whole.denoiser.active, active), "the frames the filter is on in, in one call and in chunks of 10"
    assert np.array_equal(turns, np.flatnonzero(np.diff(active.astype(int)) == 1) + 1), "where it turned on"
    assert len(whole.stabilizer.motions) == len(stream), "the camera's motion of every frame of the call"
    split = TubeCutter([], 16, 0.0, "flow", "medium", corrections=True, inter_coded=True)
    parts = [split.flow(part) for part in np.split(stream, turns)]
    assert np.array_equal(flow, np.concatenate(parts)), "cut again from each turn-on"


@pytest.mark.parametrize(
    "readings, inter_coded, blocks, on",
    [
        ([0.0, 0.0, 0.0, 0.6, 0.6, 0.0], True, 0.3, []),  # two of five far above the rest: their mean 0.24
        ([0.2] * 5 + [0.0], True, 0.3, range(10, 31)),  # on once they read it, for 2 s though the blocks read quiet, then off
        ([0.2] * 5 + [0.0], True, 0.6, range(10, 50)),  # the blocks read a 60 kb/s night's dip: it stays on
        ([0.0, 0.0, 0.2], True, 0.3, [*range(10, 31), *range(41, 50)]),  # lasting: on again once five more read it
        ([0.2], False, 0.3, []),  # frames each coded alone: not read
    ],
)
def test_still_ground_s_flow_turns_the_filter_on_by_the_median_of_its_last_readings(monkeypatch, readings, inter_coded, blocks, on):
    """While the filter is off in an inter-coded stream, still ground's flow (each frame's median flow length, the
    tube cutter's, scripted here: the last listed reading repeats) turns it on at the next frame once the median of
    its last STILL_READS readings reaches STILL_FLOW_NOISY, each read SHAKE_FRAMES // 2 frames after its own (once the
    camera's shift around it is known); one or two readings far above the rest leave it off, which their mean would
    not. Turned on so while the codec's blocks read quiet (``blocks``, scripted: 0.3) and single pixels σ 1, it stays
    on for STILL_HOLD frames (an encoder's first blocks read quiet), then turns off, and still ground is read afresh;
    while the blocks read STILL_COARSE_QUIET or more (0.6, as a 60 kb/s night's dip below 0.8), it stays on."""
    still = np.repeat(110 + textured_ground(3)[None], 50, axis=0)
    gray = np.clip(still + np.random.default_rng(0).normal(0, 1.0, still.shape), 0, 255).astype(np.uint8)
    monkeypatch.setattr(camera, "coarse_noise", lambda *args: blocks)
    scripted = itertools.chain(readings, itertools.repeat(readings[-1]))
    denoiser, active = Denoiser(inter_coded=inter_coded), []
    for frame in gray[:, None]:
        denoiser(frame)
        active.append(denoiser.active[0])
        reading = next(scripted)
        denoiser.read_still(np.full((1, 8, 8, 2), [reading, 0.0], np.float32), denoiser.active)
    assert denoiser.sigma < camera.QUIET, f"single pixels read {denoiser.sigma:.2f}"
    assert np.array_equal(np.flatnonzero(active), list(on)), f"the filter is on in frames {np.flatnonzero(active)}, {list(on)} asked"


@pytest.mark.parametrize(
    "shaken, first",
    [
        ([], 9),  # read 5 frames after its own: the first five readings, from frame 4 on
        (range(3, 13), 22),  # shaking: nor are the frames just before and after it read
        (range(5, 15), 24),  # the four readings before it, taken while the frames around them held still, are dropped
        ([6], 9),  # a single jolt: the median of the shifts around a frame leaves it read, as their mean would not
    ],
)
def test_still_ground_is_not_read_while_the_camera_shakes(shaken, first):
    """A camera shaking by day through H.264 leaves still ground's flow at 0.11 to 0.21 px a frame once the
    stabilizer has taken its motion off, as much as a lossy dusk; read there, the trigger turned the filter on again
    and again and the stretches held back around each turn-on cost real incidents. Where the median of the camera's
    shift (the translation of the stabilizer's estimate, 1 px here while it shakes and 2 px at a jolt) over the
    SHAKE_FRAMES around a frame reads SHAKING_PX or more, still ground is not read and the readings so far are
    dropped: a window that ended at the frame read the first frames of a shake as still, and they turned the filter
    on (after frame 7 of the first shake here). A lossy dusk's grain moves the estimate's affine part (0.6 px at the corners here), which
    leaves the frames read. Frames come one call each; ``first``: the frame whose call turns the filter on."""
    denoiser, calls = Denoiser(inter_coded=True), []
    for i in range(30):
        shift = 2.0 if list(shaken) == [i] else 1.0 if i in shaken else 0.1
        estimate = np.array([[shift * (-1) ** i, 0.0], [0.6, 0.0], [0.0, 0.6]])  # the grain's 0.6 px at the corners
        calls.append(denoiser.read_still(np.full((1, 8, 8, 2), [0.2, 0.0], np.float32), np.zeros(1, bool), [estimate]))
    on = [i for i, turn in enumerate(calls) if turn is not None]
    assert on[:1] == [first] and calls[first] == 0, f"the filter turns on after frames {on}, after {first} asked"


@pytest.mark.parametrize("quality", [5, 10])
def test_a_motion_jpeg_stream_by_day_is_not_taken_for_a_lossy_night(tmp_path, quality):
    """The tests' scene by day through Motion JPEG at ``-q:v`` 5 and 10: single pixels read σ 1.3 and 0.7, the
    codec's blocks 3.8 and 5.0, as a lossy night's remnant reads (σ 1.0 to 1.3, blocks 3.1 to 3.7). Read while the
    filter is off, the blocks turned it on (in 195 of 200 frames of a 20 s clip); but each frame of Motion JPEG is coded alone, so
    nothing of its blocks lasts, and a cutter made for its codec (as the cuboid stage and scoring make it) does not
    read them while the filter is off."""
    frames, _ = render_clip(100, HEIGHT, WIDTH, seed=777, extra=[injected_mover()])
    write_video(frames, tmp_path / "scene.mkv")
    mjpeg = tmp_path / "mjpeg.avi"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(tmp_path / "scene.mkv"), "-pix_fmt", "yuvj420p", "-c:v", "mjpeg",
                    "-q:v", str(quality), str(mjpeg)], check=True, timeout=60)  # fmt: skip
    codec = open_clip(mjpeg, ExtractConfig(frame_height=HEIGHT)).codec
    assert codec == "mjpeg" and not inter_frame(codec)
    clip = decoded(mjpeg, HEIGHT)[..., :1]
    assert night_flow(clip, inter_coded=True)[2][20:].all(), "read as an inter-coded stream's, its blocks turn the filter on"
    assert not night_flow(clip, inter_coded=inter_frame(codec))[2].any(), "the filter is on by day"


def test_a_lossy_stream_s_filter_stays_on_while_its_codec_s_blocks_read_noisy():
    """Night grain (σ 6) with a codec's blocky remnant (each 8 x 8 block a new value each frame), then for 5 s the
    remnant alone (single pixels read below QUIET, as a lossy stream's rate control keeps less of the grain), then
    nothing: the filter stays on while the blocks read noisy and turns off within 2.5 s after. Turned off by single
    pixels alone, it was off from frame 41 and the remnant moved still ground 0.06 px a frame."""
    rng = np.random.default_rng(9)
    ground = 110 + textured_ground(5)
    white, blocks = [6.0] * 30 + [0.0] * 90, [1.5] * 80 + [0.0] * 40
    frames = np.stack([ground * 0.6 + rng.normal(0, w, ground.shape) + np.kron(rng.normal(0, a, (12, 16)), np.ones((8, 8))) for w, a in zip(white, blocks)])
    flow, _, active = night_flow(np.clip(np.rint(frames), 0, 255).astype(np.uint8)[..., None])
    assert active[1:80].all(), f"the filter is off in frames {np.flatnonzero(~active[1:80]) + 1}"
    assert not active[105:].any(), f"the filter is still on in frames {np.flatnonzero(active[105:]) + 105}"
    moved = np.linalg.norm(flow[30:80], axis=-1).mean()
    assert moved < 0.005, f"still ground moves {moved:.4f} px a frame while the remnant lasts"


def test_in_deep_night_a_faint_mover_is_found_over_3_frames():
    """The night disc at half the light in noise of 18 grey levels: the filter smears it so much that its filtered
    flow shows 21% of it moving; from 12 grey levels of noise up the denoised frames' flow over 3 frames, which shows
    more of it, counts too, and where either shows motion the flow is the raw frames' over 3 frames: the disc keeps
    46% of its true flow's length, 0.83 px wrong (the filtered flow's movers alone: 25%, 1.16 px), and still ground
    stays still."""
    dark, noisy = night_disc(light=0.5, noise=18.0)
    kept, error, moved = disc_flow_against(night_flow(noisy)[0][10:], night_flow(dark)[0][10:])
    assert kept > 0.38, f"the mover's flow kept {kept:.0%}"
    assert error < 0.95, f"the mover's flow is {error:.2f} px wrong"
    assert moved < 0.05, f"still ground moves {moved:.3f} px a frame"


def test_flow_lengths_are_numpy_s_norms_to_the_last_bit():
    """The night path's lengths (movers, shortening) are taken without np.linalg.norm, for speed: the same values."""
    flow = (np.random.default_rng(4).standard_cauchy((3, 40, 50, 2)) * 3).astype(np.float32)
    flow[0, :5] = 0.0
    np.testing.assert_array_equal(flow_length(flow), np.linalg.norm(flow, axis=-1))
    length = np.linalg.norm(flow, axis=-1, keepdims=True)
    shrunk = shrink_flow(flow.copy(), 0.1)
    np.testing.assert_array_equal(shrunk, flow * np.maximum(0.0, 1.0 - 0.1 / np.maximum(length, 1e-6)))


def test_a_flow_over_3_frames_carries_a_third_of_the_noise_and_continues_across_chunks():
    """Texture moving 1 px a frame in noise of 10 grey levels: measured over 3 frames, the flow errs a third as much
    as a frame pair's (0.041 px against 0.121, root mean square); cut in chunks, it is the same as in one piece, and a
    stream's first frames are measured over the frames there are."""
    ground = 110 + 25 * cv2.GaussianBlur(np.random.default_rng(0).normal(0, 1, (96, 128)).astype(np.float32), (0, 0), 2.0)
    moving = np.stack([np.roll(ground, t, axis=1) for t in range(12)]) * 0.7
    noisy = np.clip(moving + np.random.default_rng(2).normal(0, 10, moving.shape), 0, 255).astype(np.uint8)
    error = {}
    for frames in (1, 3):
        flow, _ = baseline_flow(noisy[:0], noisy, frames, "medium")
        error[frames] = np.sqrt(((flow[4:, 8:-8, 8:-8] - [1.0, 0.0]) ** 2).sum(axis=-1).mean())
    assert error[3] < 0.45 * error[1], f"over 3 frames {error[3]:.3f} px, a pair {error[1]:.3f} px"
    whole, spans = baseline_flow(noisy[:0], noisy, 3, "medium")
    first, first_spans = baseline_flow(noisy[:0], noisy[:4], 3, "medium")
    rest, rest_spans = baseline_flow(noisy[1:4], noisy[4:], 3, "medium")
    np.testing.assert_array_equal(np.concatenate([first, rest]), whole)
    assert list(spans) == list(first_spans) + list(rest_spans) == [0, 1, 2] + [3] * 9
    assert not whole[0].any(), "a stream's first frame has no motion"


def test_at_night_a_jerking_camera_s_own_motion_is_taken_off_a_mover_s_flow():
    """The night disc, the camera jerking down 2 px every other frame: over each frame's 3 frame pairs the camera moved
    4 or 2 px, and that motion, divided by 3, is taken off the disc's raw flow over those 3 frames. Left: 0.18 px down
    on a frame's average (the denoised frames, on which the camera's motion is measured, show a 2-px jerk as 1.5);
    0.54 if the motion were taken from the 3 pairs before, 0.93 if none were taken off, more if not divided by 3."""
    _, noisy = night_disc(pan=True)
    night, cutter, active = night_flow(noisy)
    assert active[10:].all() and (cutter.stabilizer.motions[1::2] > 1.0).all(), "night, and the camera jerks"
    motion = disc_motion(night)
    for t, x in enumerate(motion[:, 0], 10):
        assert 1.2 < x < 2.0, f"frame {t}: the disc moves {x:.2f} px right"
    down = np.abs(motion[:, 1]).mean()
    assert down < 0.35, f"the disc moves {down:.2f} px down on a frame's average"


def test_the_camera_s_motion_taken_off_a_raw_flow_clears_where_the_picture_came_in_or_went_out():
    """Three frame pairs, the camera moving 1.5 px right in each: taken off a flow over those 3 pairs, it leaves the
    flow's own motion inside and nothing within ceil(4.5) + 2 = 7 px of the edge (nothing can be matched there); a
    pair of a still camera is neither changed nor cleared."""
    st = Stabilizer("ultrafast")
    right = np.array([[1.5, 0.0], [0.0, 0.0], [0.0, 0.0]])
    st.taken = np.stack([right, right, right, np.zeros((3, 2))])  # the last frame's pair: the camera still
    flow = np.full((2, 40, 50, 2), [2.0, 1.0], np.float32)
    out = st.take_off(flow, np.array([3, 1]))
    assert np.allclose(out[0, 7:-7, 7:-7], [0.5, 1.0]) and not out[0, :7].any() and not out[0, :, -7:].any()
    assert np.allclose(out[0, 6, 10:-10], 0.0) and np.allclose(out[0, 7, 10:-10], [0.5, 1.0]), "7 px, not more"
    assert np.allclose(out[1], [2.0, 1.0]), "a still camera's pair keeps its edge"


def test_a_shaken_stream_s_first_frames_keep_the_filtered_flow_at_movers():
    """A stream's second and third frames span 1 and 2 frame pairs: where the camera moved in them, their raw flow
    (more of a pair's noise, and a camera's motion over fewer pairs) is not used (Stabilizer.moved_early); a still
    camera's, and a frame spanning all 3 pairs, are."""
    st = Stabilizer("ultrafast")
    moved = np.array([[0.8, 0.0], [0.0, 0.0], [0.0, 0.0]])
    st.taken = np.stack([np.zeros((3, 2)), moved, np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2))])
    assert st.moved_early(np.array([0, 1, 2, 3, 3])).tolist() == [False, True, True, False, False]
    st.taken = np.zeros((5, 3, 2))
    assert not st.moved_early(np.array([0, 1, 2, 3, 3])).any()


def test_at_night_a_shaking_camera_s_motion_is_taken_off_a_mover_s_flow_without_lag():
    """The night disc (2 px a frame to the right), the camera shaking ±2 px at 1 Hz across and 1.3 Hz down: what is
    taken off the disc's raw flow over 3 frames is the camera's motion read on the denoised frames, whose running mean
    follows the camera from 0.5 px; the disc then moves 0.076 px a frame up or down on average (its own motion is
    across). With a 1 px bar the mean lagged the picture, and so did that reading: 0.141."""
    night, _, active = night_flow(shaken_at_night(night_disc(light=1.0, noise=0.0)[0][..., 0], 2.0, 1.0, 10.0))
    assert active[10:].all(), "night"
    down = np.abs(disc_motion(night)[:, 1]).mean()
    assert down < 0.1, f"the disc moves {down:.3f} px up or down on a frame's average"


def textured_ground(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    t = cv2.GaussianBlur(np.random.default_rng(seed).normal(0, 1, (h, w)).astype(np.float32), (0, 0), 2.0)
    return 25 * t / t.std()


def shaken_at_night(frames: np.ndarray, amplitude: float, hz: float, sigma: float) -> np.ndarray:
    """Daylight frames ``(n, H, W)`` at 10 fps, the camera shaking ±``amplitude`` px (``hz`` across, 1.3 times as fast
    down), at night (70% of the light, noise ``sigma``): uint8 ``(n, H, W, 1)``."""
    t = np.arange(len(frames)) / 10.0
    shaken = shifted(frames, amplitude * np.sin(2 * np.pi * hz * t), amplitude * np.sin(2 * np.pi * 1.3 * hz * t + 1)).astype(np.float32)
    return np.clip(shaken * 0.7 + np.random.default_rng(5).normal(0, sigma, shaken.shape), 0, 255).astype(np.uint8)[..., None]


def still_ground_shaken_at_night(amplitude: float, hz: float, sigma: float) -> np.ndarray:
    """Textured ground 128 x 96 shaken at night (:func:`shaken_at_night`): the flow the models see of its still
    ground, px a frame, frame by frame from the 10th (the night filter on from there)."""
    night, _, active = night_flow(shaken_at_night(np.repeat(110 + textured_ground(0)[None], 40, axis=0), amplitude, hz, sigma))
    assert active[10:].all(), "night"
    return np.linalg.norm(night, axis=-1)[10:, 8:-8, 8:-8].mean(axis=(1, 2))


def test_at_night_a_still_camera_s_flow_is_not_measured_again():
    """Still, faintly textured ground at night (σ 10, 70% of the light): the camera's motion estimated on the denoised
    frames is the noise's (0.14 px, median) and passes :data:`cuboids.camera.STILL_CAMERA_PX` in most frames; while the
    night filter is on the camera counts as still below :data:`cuboids.camera.NIGHT_STILL_CAMERA_PX`, so no frame is
    aligned and its flow measured again (at the daylight bar, 87% of them were)."""
    still = np.repeat(110 + 0.3 * textured_ground(6)[None], 40, axis=0)
    night = np.clip(still * 0.7 + np.random.default_rng(4).normal(0, 10, still.shape), 0, 255).astype(np.uint8)
    measured = []

    class Counting:
        def __init__(self, dis):
            self.dis = dis

        def calc(self, *args):
            measured.append(1)
            return self.dis.calc(*args)

    cutter = TubeCutter([], 16, 0.0, "flow", "medium", corrections=True)
    cutter.stabilizer.dis = Counting(cutter.stabilizer.dis)
    motions = []
    for i in range(0, len(night), 10):
        cutter.flow(night[i : i + 10, ..., None])
        motions += list(cutter.stabilizer.motions[cutter.denoiser.active])
    assert len(motions) >= 30 and np.mean(np.array(motions) >= camera.STILL_CAMERA_PX) > 0.5, f"the noise's motion reads {np.median(motions):.3f} px"
    assert not measured, f"{len(measured)} frames of a still camera measured again"


def test_at_night_the_filter_follows_a_shaking_camera():
    """Textured ground, the camera shaking ±2 px (1 and 1.3 Hz), at night (σ 10): the temporal filter's running mean
    is moved along with the picture, so the filtered frames do not smear and the still ground's flow, once the
    camera's motion is taken off, stays near zero (0.0002 px a frame; 0.002 when it followed from 1 px, 0.025 when it
    was not moved along)."""
    still = still_ground_shaken_at_night(2.0, 1.0, 10.0).mean()
    assert still < 0.001, f"still ground moves {still:.4f} px a frame"


@pytest.mark.parametrize("sigma", [10, 18])
def test_at_night_a_fast_shake_is_read_from_the_frames_as_they_came(sigma, monkeypatch):
    """Textured ground, the camera shaking ±4 px at 3 Hz (up to 7 px between two frames), at night: on the denoised
    frames the flow loses such a shift, so from 3 px between two frames as they came the filter's mean and the
    stabilizer take the camera's shift read on those (the stabilizer also for a second after, when the camera turns
    back), each read again away from what moves once the frames are aligned (on this small frame too few samples are
    left for that, and the first reading stands). The still ground's flow stays low: 0.0001 px a frame at σ 10,
    0.0008 at σ 18, its worst frame 0.0008 and 0.0027 px (0.17 and 0.54, worst 0.48 and 2.3, without that reading;
    0.046 and 0.015, worst 0.10 and 0.08, when this test was written)."""
    read_again = []
    real = camera.jump_away_from_movers
    monkeypatch.setattr(camera, "jump_away_from_movers", lambda *args: read_again.append(args[1].shape) or real(*args))
    still = still_ground_shaken_at_night(4.0, 3.0, sigma)
    assert len(read_again) >= 25 and set(read_again) == {(12, 16, 2)}, f"{len(read_again)} readings read again: {set(read_again)}"
    assert still.mean() < 0.01, f"still ground moves {still.mean():.4f} px a frame"
    assert still.max() < 0.02, f"still ground moves {still.max():.4f} px in frame {10 + still.argmax()}"


def test_at_night_the_filter_follows_a_fast_shake_s_smaller_steps_too():
    """Textured ground shaken ±3 px at 2.5 Hz at night (σ 12): between the shake's 3 to 7 px steps the picture moves
    0.3 to 3 px on some frames. The filter's mean follows those steps at once as well, by the reading on the frames as
    they came, and the still ground's flow stays at 0.0005 px a frame at worst (0.025 when the mean followed only
    steps of 3 px or more and blended two views of the picture after the others)."""
    still = still_ground_shaken_at_night(3.0, 2.5, 12.0)
    assert still.max() < 0.005, f"still ground moves {still.max():.4f} px in frame {10 + still.argmax()}"


@pytest.mark.parametrize("amplitude, hz, sigma", [(4.0, 3.0, 10.0), (3.0, 2.5, 12.0)])
def test_a_camera_shaking_fast_at_night_is_not_taken_for_rain(amplitude, hz, sigma):
    """Textured ground shaken fast at night: the rain filter read the moving picture's edges as streaks and was on in
    all 40 frames, showing each pixel as the median of three frames of a moving picture (on Ped2 shaken ±3 px at
    2.5 Hz at night, σ 12, it was on for the first 3 to 4 s of most clips, and the flow of every other frame moved
    everywhere). Frames the camera jumped to pass it as they came."""
    clip = shaken_at_night(np.repeat(110 + textured_ground(0)[None], 40, axis=0), amplitude, hz, sigma)
    cutter = TubeCutter([], 16, 0.0, "flow", "medium", corrections=True)
    rain = []
    for i in range(0, len(clip), 10):
        cutter.flow(clip[i : i + 10])
        rain += list(cutter.derainer.active)
    assert not any(rain), f"rain removal on in {sum(rain)} of {len(rain)} frames"


def test_at_night_a_large_mover_does_not_move_a_still_camera_s_filter(monkeypatch):
    """A still camera in deep night (half the light, σ 18) and a textured disc 60 px wide crossing it at 2 px a frame:
    the camera's shift read from the flow reaches 1 px now and then (the disc pulls it), but moving the mean would
    bring only the disc's part of the picture nearer: the filtered frames are exactly those of a filter that never
    follows the camera."""
    ground, skin = 110 + textured_ground(0), textured_ground(3)
    yy, xx = np.mgrid[0:96, 0:128]
    frames = []
    for t in range(40):
        frame, disc = ground.copy(), (xx - 30 - 2 * t) ** 2 + (yy - 48) ** 2 < 30**2
        frame[disc] = 150 + np.roll(skin, 2 * t, axis=1)[disc]
        frames.append(frame)
    deep = np.clip(np.stack(frames) * 0.5 + np.random.default_rng(5).normal(0, 18, (40, 96, 128)), 0, 255).astype(np.uint8)
    denoiser = Denoiser()
    follows = denoiser(deep)
    assert denoiser.active[5:].all(), "deep night"
    monkeypatch.setattr(camera, "FOLLOW_CAMERA_PX", np.inf)
    np.testing.assert_array_equal(follows, Denoiser()(deep))


def test_in_deep_night_walkers_on_ground_the_noise_hides_do_not_move_a_still_camera_s_filter(monkeypatch):
    """Four small bright walkers crossing faint ground (texture of 6 grey levels, then half the light and σ 18) at
    2 px a frame: they lead the camera's reading past 1 px for frames in a row, and moving the mean also smooths its
    leftover noise, which brings it nearer a noisy frame whatever the shift (compared with the mean not moved, 4 of
    the 40 frames moved it). Compared with the same shift back, none does: the filtered frames are exactly those of a
    filter that never follows the camera. (A limit: sixteen such walkers all going one way move it on 27 of 40.)"""
    rng = np.random.default_rng(1)
    ground = 110 + textured_ground(1) * 6 / 25
    ys, xs = rng.integers(8, 88, 4), rng.integers(0, 128, 4)
    yy, xx = np.mgrid[0:96, 0:128]
    frames = np.repeat(ground[None], 40, axis=0)
    for t in range(40):
        for y, x in zip(ys, xs):
            frames[t][(xx - (x + 2 * t) % 128) ** 2 + (yy - y) ** 2 < 5**2] = 170
    deep = np.clip(frames * 0.5 + np.random.default_rng(5).normal(0, 18, frames.shape), 0, 255).astype(np.uint8)
    follows = Denoiser()(deep)
    monkeypatch.setattr(camera, "FOLLOW_CAMERA_PX", np.inf)
    np.testing.assert_array_equal(follows, Denoiser()(deep))


def test_in_heavy_rain_streaks_two_frames_held_at_a_pixel_are_taken_out_too(normal_frames):
    """Heavy rain (the nuisance benchmark's, scaled to the tiny frames: 45 streaks of 8 px a frame, 60 grey levels; 6%
    of a frame's pixels bright): at many pixels two of the last three frames hold a streak, which their median keeps
    (1.3% of the pixels stood 15 grey levels above the same median of the dry frames); shown as the darkest of the
    three where the median still stands out above it and its neighbours as a streak does, 0.3%."""
    clean = normal_frames[:40]
    rain = apply(Nuisance("rain", "rain", {"drops": 45, "length_px": 8, "brightness": 60}), clean, seed=7)
    derainer = Derainer()
    shown = derainer(rain)
    assert derainer.active.all()
    bright = (rain[5:].astype(np.int16) - clean[5:] > camera.SPIKE_LEVEL).mean()
    dry = np.median(np.stack([clean[3:-2], clean[4:-1], clean[5:]]), axis=0)
    left = (shown[5:].astype(np.int16) - dry > camera.SPIKE_LEVEL).mean()
    assert bright > 0.05 and left < 0.006, f"{left:.2%} of the pixels still bright from streaks ({bright:.2%} in the rain)"


def test_rain_streaks_are_taken_out_while_it_rains_and_a_walker_is_kept(normal_frames):
    """Streaks in one frame each are gone from what the flow sees; the scene's own moving things stay (a frame late)."""
    clean = normal_frames[:40]
    # the nuisance benchmark's rain, scaled to the tiny frames: streaks a new draw every frame
    rain = apply(Nuisance("rain", "rain", {"drops": 20, "length_px": 6, "brightness": 45}), clean, seed=7)
    derainer = Derainer()
    shown = derainer(rain)
    assert derainer.active.all(), "rain is recognised from the first frames (the first two show the third)"
    streaks = np.abs(rain.astype(np.int16) - clean).mean()
    dry = np.median(np.stack([clean[3:-2], clean[4:-1], clean[5:]]), axis=0)  # the same median of the dry frames
    left = np.abs(shown[5:].astype(np.int16) - dry).mean()
    assert left < 0.25 * streaks, f"streaks left {left:.2f} grey levels against {streaks:.2f}"
    moved = np.abs(np.diff(clean.astype(np.int16), axis=0)).mean()
    assert np.abs(np.diff(shown[5:].astype(np.int16), axis=0)).mean() > 0.5 * moved, "what moves in the scene still moves"
