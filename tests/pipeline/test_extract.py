import os

import h5py
import numpy as np
import pytest

from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import ArtifactError, InputError
from cuboid_ad.core.frames import iter_frames_file, read_frames_info
from cuboid_ad.pipeline.stages.extract import extract_clip, extract_folder

CFG = Config.from_dict({"extract": {"frame_height": 48}})


def test_frames_file_round_trip_with_its_attributes(frames_video, tmp_path):
    frames, video = frames_video
    out = extract_clip(video, tmp_path / "f" / "clip.h5", CFG, chunk_frames=16)
    info = read_frames_info(out, CFG)
    assert (info.n_frames, info.height, info.width, info.channels, info.fps) == (40, 48, 64, 1, 10.0)
    assert info.cfg == CFG and info.source_path == str(video.resolve())
    back = np.concatenate([c for _, c in iter_frames_file(out, chunk_frames=9)])
    assert np.array_equal(back[..., 0], frames)
    with h5py.File(out) as fh:
        assert fh.attrs["source_size"] == video.stat().st_size
        assert fh.attrs["original_width"] == 64
    assert info.codec == "ffv1", "the codec is recorded: the cuboid stage cuts the tubes scoring cuts (core.frames.inter_frame)"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temporary left behind"


def test_reading_with_another_extract_config_is_refused(frames_video, tmp_path):
    _, video = frames_video
    out = extract_clip(video, tmp_path / "clip.h5", CFG)
    other = CFG.with_overrides(extract={"frame_height": 24})
    with pytest.raises(ArtifactError, match="extract.frame_height was 48, now 24"):
        read_frames_info(out, other)


def test_folder_skips_fresh_clips_rebuilds_stale_ones_and_prunes_gone_ones(frames_video, tmp_path):
    _, video = frames_video
    clips = tmp_path / "train"
    clips.mkdir()
    for name in ("a", "b"):
        os.link(video, clips / f"{name}.mkv")
    frames = tmp_path / "frames"
    extract_folder(clips, frames, CFG)
    stamp = (frames / "a.h5").stat().st_mtime_ns
    extract_folder(clips, frames, CFG)
    assert (frames / "a.h5").stat().st_mtime_ns == stamp, "an up-to-date clip was redone"
    extract_folder(clips, frames, CFG.with_overrides(extract={"frame_height": 24}))
    assert read_frames_info(frames / "a.h5").height == 24
    (clips / "b.mkv").unlink()
    extract_folder(clips, frames, CFG)
    assert sorted(p.name for p in frames.glob("*.h5")) == ["a.h5"]


def test_a_bad_clip_fails_alone_and_is_reported(frames_video, tmp_path):
    _, video = frames_video
    clips = tmp_path / "train"
    clips.mkdir()
    os.link(video, clips / "good.mkv")
    (clips / "bad.mkv").write_bytes(b"\x00" * 4000)
    with pytest.raises(InputError, match="1 of 2 clips failed: .*bad.mkv"):
        extract_folder(clips, tmp_path / "frames", CFG)
    assert [p.name for p in (tmp_path / "frames").iterdir()] == ["good.h5"]
