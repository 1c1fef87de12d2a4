"""Camera and phone files as they come (issue 19): a corpus the tests make with ffmpeg.

Each case checks the frame count, the times of the first and last frame against the
truth (what the file's timestamps mean), and, where the geometry changes, where a marker
lands in the decoded frame.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cuboid_ad.cli import cli
from cuboid_ad.core.config import ExtractConfig
from cuboid_ad.core.errors import InputError
from cuboid_ad.core.frames import measured_fps
from cuboid_ad.pipeline.media.decode import ffmpeg_exe, open_clip, read_frames, working_size

CFG = ExtractConfig(frame_height=64)
BOX = "drawbox=x=8:y=8:w=24:h=16:color=white:t=fill"  # a white marker in the top-left corner


def ffmpeg(*args: str) -> None:
    """Run ffmpeg; its encoders on one thread, so that the files come out the same on any machine."""
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args[:-1], "-threads", "1", args[-1]], check=True)


def decode(path: Path, cfg: ExtractConfig = CFG, stream: int = 0, allow_damaged: bool = False) -> tuple[np.ndarray, np.ndarray]:
    parts = list(read_frames(open_clip(path, cfg, stream), cfg, with_times=True, allow_damaged=allow_damaged))
    return np.concatenate([f for f, _ in parts])[..., 0], np.concatenate([t for _, t in parts])


def marker_centre(frame: np.ndarray) -> tuple[float, float]:
    """(row, column) of the bright marker, as fractions of the frame's height and width."""
    ys, xs = np.nonzero(frame > 128)
    return ys.mean() / frame.shape[0], xs.mean() / frame.shape[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("footage")
    black = "color=black:size=96x64:rate=25:duration=4"
    # the file: H.264 in AVI with an audio track, 25 frames a second in a 1/50 s time base,
    # so that ffmpeg's banner reads "50 fps, 25 tbr"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=4", "-f", "lavfi", "-i", "sine=d=4",
           "-c:v", "libx264", "-enc_time_base", "1/50", "-fps_mode", "passthrough", "-c:a", "aac", str(d / "field-rate.avi"))
    # variable frame rate: 25 frames at 25 fps, then 25 at 10 fps
    ffmpeg("-f", "lavfi", "-i", black, "-vf", "setpts='if(lt(N,25),N*0.04,1+(N-25)*0.1)/TB'", "-fps_mode", "passthrough",
           "-frames:v", "50", "-c:v", "libx264", str(d / "vfr.mp4"))
    # a phone's portrait video: landscape pixels with a display rotation of 90 degrees
    ffmpeg("-f", "lavfi", "-i", f"color=black:size=96x64:rate=25:duration=1,{BOX}", "-c:v", "libx264", str(d / "plain.mp4"))
    ffmpeg("-display_rotation", "90", "-i", str(d / "plain.mp4"), "-c", "copy", str(d / "rotated.mp4"))
    # anamorphic, DVD-style: 72x64 stored pixels shown 16:11 wider, so 104.7x64 on screen
    ffmpeg("-f", "lavfi", "-i", "color=black:size=72x64:rate=25:duration=1,drawbox=x=20:y=16:w=22:h=32:color=white:t=fill",
           "-vf", "setsar=16/11", "-c:v", "libx264", str(d / "anamorphic.mkv"))
    # interlaced, top field first
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=2", "-c:v", "libx264", "-flags", "+ildct+ilme",
           "-x264-params", "tff=1", str(d / "interlaced.mkv"))
    # 10 bits a sample: a mid grey
    ffmpeg("-f", "lavfi", "-i", "color=0x808080:size=96x64:rate=25:duration=1", "-pix_fmt", "yuv420p10le", "-c:v", "ffv1", str(d / "ten-bit.mkv"))
    # two video streams (dark, then bright), an audio track and subtitles
    (d / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n", encoding="utf-8")
    ffmpeg("-f", "lavfi", "-i", "color=0x202020:size=96x64:rate=25:duration=1", "-f", "lavfi", "-i", "color=0xe0e0e0:size=96x64:rate=25:duration=1",
           "-f", "lavfi", "-i", "sine=d=1", "-i", str(d / "subs.srt"), "-map", "2:a", "-map", "0:v", "-map", "1:v", "-map", "3:s",
           "-c:v", "ffv1", "-c:a", "aac", "-c:s", "srt", str(d / "two-streams.mkv"))
    # a damaged stretch in the middle of an MPEG-TS, which decoders get past
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=8", "-c:v", "libx264", "-g", "25", "-bf", "0", str(d / "clean.ts"))
    data = bytearray((d / "clean.ts").read_bytes())
    rng = np.random.default_rng(1)
    middle = len(data) // 2
    data[middle : middle + len(data) // 10] = rng.integers(0, 256, len(data) // 10, dtype=np.uint8).tobytes()
    (d / "damaged-middle.ts").write_bytes(bytes(data))
    # a camera's dropped minute: frames 0-24 at 25 fps, then frames 25-49 a minute later
    ffmpeg("-f", "lavfi", "-i", black, "-vf", "setpts='if(lt(N,25),N*0.04,60+(N-25)*0.04)/TB'", "-fps_mode", "passthrough",
           "-frames:v", "50", "-c:v", "ffv1", str(d / "gap.mkv"))
    return d


def test_a_field_rate_avi_gets_its_true_rate_and_times(corpus):
    src = open_clip(corpus / "field-rate.avi", CFG)
    frames, times = decode(corpus / "field-rate.avi")
    assert len(frames) == 100 and src.fps == 25, "ffmpeg's 'tbr', not the container's '50 fps'"
    assert times[0] == 0 and measured_fps(times, src.fps) == pytest.approx(25, abs=0.01)
    # the AVI muxer's own timestamps stray by a frame at the file's two ends (0, 0.08, 0.12, ...)
    assert abs(times[-1] - 3.96) <= 0.04 + 1e-9


def test_score_prints_the_true_duration_of_that_avi(corpus, trained_work, tmp_path):
    res = CliRunner().invoke(cli, ["score", str(corpus / "field-rate.avi"), "--work", str(trained_work), "--out", str(tmp_path), "--no-maps", "-q"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("field-rate.avi: 100 frames (4.0 s at 25 fps)"), res.output
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert len(rows) == 101 and abs(float(rows[-1].split(",")[1]) - 3.96) <= 0.04 + 1e-9


def test_variable_frame_rate_keeps_each_frames_time(corpus):
    frames, times = decode(corpus / "vfr.mp4")
    truth = np.r_[np.arange(25) * 0.04, 1 + np.arange(25) * 0.1]
    assert len(frames) == 50
    np.testing.assert_allclose(times, truth, atol=0.02)  # half a frame at 25 fps


def test_a_recording_gap_shows_as_a_gap(corpus):
    frames, times = decode(corpus / "gap.mkv")
    assert len(frames) == 50 and times[0] == 0
    assert times[24] == pytest.approx(0.96, abs=0.02) and times[25] == pytest.approx(60.0, abs=0.02) and times[-1] == pytest.approx(60.96, abs=0.02)


def test_rotation_metadata_is_applied_as_players_do(corpus):
    plain = open_clip(corpus / "plain.mp4", CFG)
    turned = open_clip(corpus / "rotated.mp4", CFG)
    assert (plain.width, plain.height) == (96, 64) and turned.rotation == 90 and (turned.width, turned.height) == (64, 96)
    frame = decode(corpus / "rotated.mp4")[0][0]
    assert frame.shape == working_size(turned, CFG)[::-1] == (64, 42), "portrait, at the configured height"
    # the marker, top-left in the stored landscape frame, ends bottom-left: a quarter turn counter-clockwise
    row, col = marker_centre(frame)
    assert row > 0.6 and col < 0.4, (row, col)


def test_non_square_pixels_are_shown_at_their_display_aspect(corpus):
    src = open_clip(corpus / "anamorphic.mkv", CFG)
    assert (src.width, src.height) == (105, 64) and working_size(src, CFG) == (104, 64)
    frame = decode(corpus / "anamorphic.mkv")[0][0]
    ys, xs = np.nonzero(frame > 128)
    width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    assert abs(width / height - (22 * 16 / 11) / 32) < 0.1, "the marker keeps its shape on screen"


def test_interlaced_frames_are_deinterlaced_one_for_one(corpus):
    src = open_clip(corpus / "interlaced.mkv", CFG)
    frames, times = decode(corpus / "interlaced.mkv")
    assert src.interlaced and len(frames) == 50 and times[-1] == pytest.approx(1.96, abs=0.02)
    assert not open_clip(corpus / "vfr.mp4", CFG).interlaced


def test_ten_bit_video_reads_as_eight_bit(corpus):
    frames, _ = decode(corpus / "ten-bit.mkv")
    assert len(frames) == 25 and abs(float(frames.mean()) - 128) < 3


def test_the_first_video_stream_by_default_any_by_number(corpus):
    clip = corpus / "two-streams.mkv"  # audio first, then two video streams, then subtitles
    assert decode(clip)[0].mean() < 60 and decode(clip, stream=1)[0].mean() > 200
    with pytest.raises(InputError, match="has 2 video stream"):
        open_clip(clip, CFG, stream=2)
    res = CliRunner().invoke(cli, ["extract", "--data", str(corpus / "nope"), "--work", str(corpus / "w"), "--stream", "-1"])
    assert res.exit_code == 2


def test_damage_in_the_middle_keeps_the_frames_that_decode_with_a_warning(corpus, caplog):
    clean, _ = decode(corpus / "clean.ts")
    with caplog.at_level(logging.WARNING):
        frames, times = decode(corpus / "damaged-middle.ts")
    assert 0.5 * len(clean) < len(frames) < len(clean), "most frames kept, the damaged stretch's lost"
    assert times[-1] == pytest.approx(7.96, abs=0.02), "the frames after the damage keep their times"
    assert any("decoding errors between frames" in r.getMessage() and "kept the frames that decode" in r.getMessage() for r in caplog.records)


def test_truncation_at_the_end_still_needs_allow_damaged(corpus):
    data = (corpus / "gap.mkv").read_bytes()
    cut = corpus / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged or truncated.*--allow-damaged"):
        decode(cut)
    frames, times = decode(cut, allow_damaged=True)
    assert 10 < len(frames) < 50 and times[0] == 0
