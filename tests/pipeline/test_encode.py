"""One MP4 writer with one encoder rule, for the report's video and a live event's clip alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cuboid_ad.core.config import ExtractConfig
from cuboid_ad.core.errors import UserError
from cuboid_ad.pipeline.media.decode import ffmpeg_exe, open_clip, read_frames
from cuboid_ad.pipeline.media.encode import Mp4Writer, pick_h264_encoder

ROOT = Path(__file__).resolve().parents[2]
LISTING = """Encoders:
 V..... = Video
 ------
 V....D libx264              libx264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 V....D libopenh264          OpenH264 H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10 (codec h264)
 A....D aac                  AAC (Advanced Audio Coding)
"""


def test_the_encoder_rule_prefers_libx264_falls_back_to_openh264_and_refuses_neither():
    assert pick_h264_encoder(LISTING) == "libx264"
    assert pick_h264_encoder(LISTING.replace(" V....D libx264 ", " V....D libx265 ")) == "libopenh264"
    with pytest.raises(UserError, match="no H.264 encoder"):
        pick_h264_encoder(" A....D aac   AAC\n")


@pytest.mark.parametrize("encoder", ["libx264", "libopenh264"])
def test_the_writer_makes_a_playable_mp4_of_odd_size_with_either_encoder(tmp_path, encoder):
    frames = np.random.default_rng(0).integers(0, 256, size=(12, 37, 51, 3), dtype=np.uint8)
    with Mp4Writer(tmp_path / "v.mp4", (37, 51), 3, 10.0, encoder=encoder) as w:
        for f in frames:
            w.write(f)
        path = w.close()
    src = open_clip(path, ExtractConfig(color="rgb", frame_height=38))
    assert (src.width, src.height) == (52, 38), "odd sides padded to even"
    assert sum(len(c) for c in read_frames(src, ExtractConfig(color="rgb", frame_height=38))) == 12
    assert not list(tmp_path.glob(".*")), "no temporary left"


def test_a_failing_encoder_leaves_nothing_and_says_why(tmp_path):
    w = Mp4Writer(tmp_path / "v.mp4", (16, 16), 1, 10.0, encoder="no_such_encoder")
    w.write(np.zeros((16, 16, 1), np.uint8))
    with pytest.raises(UserError, match="v.mp4: ffmpeg could not encode"):
        w.close()
    assert not list(tmp_path.iterdir())


@pytest.fixture
def ffmpeg_without_libx264(tmp_path) -> Path:
    """An ffmpeg whose encoder list lacks libx264 and which fails any command that asks for it, as on distributions
    that ship only libopenh264."""
    wrapper = tmp_path / "ffmpeg-no-x264"
    wrapper.write_text(f"""#!{sys.executable}
import subprocess, sys
args = sys.argv[1:]
if "libx264" in args:
    sys.stderr.write("Unknown encoder 'libx264'\\n")
    sys.exit(1)
out = subprocess.run([{ffmpeg_exe()!r}, *args], stdin=sys.stdin, stdout=subprocess.PIPE if "-encoders" in args else None)
if "-encoders" in args:
    sys.stdout.write("".join(l for l in out.stdout.decode().splitlines(True) if "libx264 " not in l))
sys.exit(out.returncode)
""")
    wrapper.chmod(0o755)
    return wrapper


def test_report_and_live_event_clips_fall_back_alike_without_libx264(ffmpeg_without_libx264, trained_work, tiny_data, tmp_path):
    env = {**os.environ, "CUBOID_AD_FFMPEG": str(ffmpeg_without_libx264)}
    clip = tiny_data / "test" / "01.mkv"
    cli = [sys.executable, str(ROOT / "cli.py")]
    run = subprocess.run([*cli, "report", str(clip), "--work", str(trained_work), "--out", str(tmp_path / "r"), "-q"], env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    watch = subprocess.run([*cli, "watch", str(clip), "--work", str(trained_work), "--out", str(tmp_path / "live"), "--events", str(tmp_path / "ev.jsonl"),
                            "-q"], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert watch.returncode == 0, watch.stderr
    ends = [m for m in map(json.loads, (tmp_path / "ev.jsonl").read_text().splitlines()) if m["type"] == "end"]
    assert ends and all(m["clip"] for m in ends), "every event clip was written"
    for video in [tmp_path / "r" / "report.mp4", *(Path(m["clip"]) for m in ends)]:
        probe = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(video)], capture_output=True, text=True)
        assert "Video: h264" in probe.stderr, f"{video.name} is H.264 ({probe.stderr[-300:]})"
