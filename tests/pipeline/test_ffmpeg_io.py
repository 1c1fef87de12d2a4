import io
import subprocess

import numpy as np
import pytest
from PIL import Image

from cuboid_ad.core.config import ExtractConfig
from cuboid_ad.core.errors import InputError
from cuboid_ad.core.frames import inter_frame
from cuboid_ad.pipeline.media.decode import _FfmpegLog, ffmpeg_exe, list_clips, open_clip, read_frames, working_size

NATIVE = ExtractConfig(frame_height=48)  # the test clips are 64x48: no resize


def _decode(path, cfg=NATIVE, chunk=7):
    return np.concatenate(list(read_frames(open_clip(path, cfg), cfg, chunk)))


def _write_folder(frames, folder, suffix=".png", start=1, digits=3):
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i + start:0{digits}d}{suffix}")
    return folder


def test_video_decodes_losslessly_in_bounded_chunks(frames_video):
    frames, path = frames_video
    src = open_clip(path, NATIVE)
    assert (src.width, src.height, src.fps, src.kind) == (64, 48, 10.0, "video")
    chunks = list(read_frames(src, NATIVE, chunk_frames=7))
    assert all(len(c) <= 7 for c in chunks)
    assert np.array_equal(np.concatenate(chunks)[..., 0], frames)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_frame_folder_and_video_give_the_same_frames(frames_video, tmp_path, suffix):
    frames, video = frames_video
    folder = _write_folder(frames, tmp_path / "clip", suffix=suffix, start=0)
    src = open_clip(folder, NATIVE)
    assert (src.kind, src.n_frames_estimate, src.fps) == ("folder", 40, NATIVE.frame_folder_fps)
    assert np.array_equal(_decode(folder), _decode(video))


def test_resize_keeps_aspect_and_rgb_has_three_channels(frames_video):
    _, path = frames_video
    cfg = ExtractConfig(frame_height=24, color="rgb")
    src = open_clip(path, cfg)
    assert working_size(src, cfg) == (32, 24)
    assert _decode(path, cfg).shape == (40, 24, 32, 3)


def test_fps_resampling_changes_the_frame_count_and_keeps_true_times(frames_video):
    _, path = frames_video  # 40 frames at 10 fps
    cfg = ExtractConfig(frame_height=48, fps=5.0)
    assert len(_decode(path, cfg)) == 20
    times = np.concatenate([t for _, t in read_frames(open_clip(path, cfg), cfg, with_times=True)])
    np.testing.assert_allclose(times, np.arange(20) * 0.2, atol=1e-6)


def test_list_clips_finds_videos_and_image_folders_only(frames_video, tmp_path):
    frames, video = frames_video
    _write_folder(frames[:3], tmp_path / "seq")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    assert [p.name for p in list_clips(tmp_path)] == ["clip.mkv", "seq"]


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("missing.mkv", None, "no such file"),
        ("empty.mkv", b"", "empty file"),
        ("noise.mp4", np.random.default_rng(1).bytes(5000), "not a video"),
    ],
)
def test_unusable_files_raise_one_clear_input_error(tmp_path, name, content, needle):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=needle):
        open_clip(path, NATIVE)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "audio.mkv"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "anullsrc=d=1", str(path)], check=True)
    with pytest.raises(InputError, match="no video stream"):
        open_clip(path, NATIVE)


def test_frame_folder_with_a_gap_or_mixed_sizes_is_refused(frames_video, tmp_path):
    frames, _ = frames_video
    gap = _write_folder(frames[:5], tmp_path / "gap")
    (gap / "003.png").unlink()
    with pytest.raises(InputError, match="gap in frame numbering"):
        open_clip(gap, NATIVE)
    mixed = _write_folder(frames[:4], tmp_path / "mixed")
    Image.fromarray(frames[0][:20, :20]).save(mixed / "005.png")
    with pytest.raises(InputError, match="mixed frame sizes"):
        open_clip(mixed, NATIVE)


def test_an_error_that_ffmpeg_writes_into_another_line_is_still_seen():
    """ffmpeg's threads share stderr: a demuxer's "File ended prematurely" can land at the end of
    showinfo's line (seen 1 run in 40 on a truncated MKV, which was then taken as whole)."""
    text = (
        b"[Parsed_showinfo_1 @ 0x1] [info] n:   0 pts:      0 pts_time:0       duration: 100 fmt:gray\n"
        b"[Parsed_showinfo_1 @ 0x1] [info] color_range:pc color_space:unknown color_primaries:unknownFile ended prematurely\n"
        b"[Parsed_showinfo_1 @ 0x1] [info] n:   1 pts:    100 pts_time:0.1     duration: 100 fmt:gray type:I File ended prematurely\n"
    )
    logged = _FfmpegLog(io.BytesIO(text))
    logged.thread.join(timeout=10)
    assert logged.n_times == 2 and [at for at, _ in logged.errors] == [1, 2]


@pytest.mark.parametrize(("codec", "args", "inter"), [("h264", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], True),
                                                      ("hevc", ["-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params", "log-level=error"], True),
                                                      ("mjpeg", ["-c:v", "mjpeg", "-pix_fmt", "yuvj420p"], False),
                                                      ("ffv1", ["-c:v", "ffv1"], False)])  # fmt: skip
def test_a_clip_s_codec_is_read_from_its_header_and_from_a_stream_s_banner(frames_video, tmp_path, codec, args, inter):
    """Which codec coded a clip ("h264", "mjpeg": ffmpeg's names) tells the tube cutter whether a lossy remnant can
    last from frame to frame (core.frames.inter_frame): from the file's header, and from the banner of the ffmpeg
    that decodes a stream (what a live source gives); a frame folder has none."""
    frames, video = frames_video
    clip = tmp_path / f"coded.{'avi' if codec == 'mjpeg' else 'mkv'}"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(video), *args, str(clip)], check=True, timeout=60)
    src = open_clip(clip, NATIVE)
    assert src.codec == codec and inter_frame(src.codec) == inter
    seen = []
    list(read_frames(src, NATIVE, 16, on_input=lambda size, name: seen.append((size, name))))
    assert seen == [((64, 48), codec)]
    folder = open_clip(_write_folder(frames[:3], tmp_path / "folder"), NATIVE)
    assert folder.codec == "" and not inter_frame(folder.codec)
