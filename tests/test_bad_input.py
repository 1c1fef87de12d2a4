"""Bad input gets one clear line and exit code 1, and leaves the work folder as it was.

Each row: how to make the input, the command, and a piece of the message the
user must see. Rows marked ok are awkward-but-valid inputs that must work.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cuboid_ad.cli import cli
from cuboid_ad.core.lock import work_lock
from cuboid_ad.pipeline.media.decode import ffmpeg_exe
from cuboid_ad.pipeline.media.synthetic import render_clip, write_video


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder but the (empty, permanent) lock file, with its size and mtime (folders: 0, 0)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else (0, 0)
        for p in folder.rglob("*")
        if p.name != ".lock"
    }


def _clip(path: Path, n: int = 30, seed: int = 3) -> Path:
    frames, _ = render_clip(n, 64, 96, seed=seed)
    return write_video(frames, path)


def _folder(path: Path, n: int = 12, size=(64, 96)) -> Path:
    path.mkdir()
    frames, _ = render_clip(n, size[0], size[1], seed=4)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(path / f"{i + 1:03d}.png")
    return path


def make_missing(d):
    return d / "missing.mkv"


def make_empty(d):
    (d / "empty.mkv").write_bytes(b"")
    return d / "empty.mkv"


def make_noise(d):
    (d / "noise.mp4").write_bytes(np.random.default_rng(5).bytes(20000))
    return d / "noise.mp4"


def make_truncated(d):
    data = _clip(d / "whole.mkv", n=40).read_bytes()
    (d / "truncated.mkv").write_bytes(data[: len(data) // 2])
    return d / "truncated.mkv"


def make_audio_only(d):
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=d=2", str(d / "audio.mkv")], check=True)
    return d / "audio.mkv"


def make_short(d):
    return _clip(d / "short.mkv", n=5)


def make_mixed_sizes(d):
    folder = _folder(d / "mixed")
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(folder / "013.png")
    return folder


def make_gap(d):
    folder = _folder(d / "gap")
    (folder / "005.png").unlink()
    return folder


def make_unknown_pixel_format(d):
    data = b"YUV4MPEG2 W32 H32 F10:1 Ip A1:1 Cxyz\n" + b"".join(b"FRAME\n" + bytes(1536) for _ in range(20))
    (d / "odd.y4m").write_bytes(data)
    return d / "odd.y4m"


def make_absurd_size(d):
    folder = d / "wide"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(np.zeros((16, 20000), np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def make_odd_name(d):
    return _clip(d / "-clip with spaces é.mkv", n=30)


def make_odd_folder_name(d):
    return _folder(d / "-100% frames ü")


SCORE_CASES = [
    ("missing path", make_missing, "no such file or folder"),
    ("empty file", make_empty, "empty file"),
    ("random bytes with a video extension", make_noise, "not a video ffmpeg can read"),
    ("truncated video", make_truncated, "damaged or truncated"),
    ("audio only, no video stream", make_audio_only, "has no video stream"),
    ("shorter than one window", make_short, "shorter than one window"),
    ("frame folder with mixed sizes", make_mixed_sizes, "mixed frame sizes"),
    ("frame folder with a gap in numbering", make_gap, "gap in frame numbering"),
    ("unknown pixel format", make_unknown_pixel_format, "unknown pixel format"),
    ("absurd dimensions", make_absurd_size, "20000x16 is outside"),
    ("spaces, unicode and a leading '-' in a file name", make_odd_name, None),
    ("spaces, unicode, '%' and a leading '-' in a folder name", make_odd_folder_name, None),
]


@pytest.mark.parametrize("what, make, message", SCORE_CASES, ids=[c[0] for c in SCORE_CASES])
def test_score_bad_input(what, make, message, trained_work, tmp_path):
    import shutil

    work = tmp_path / "work"  # a copy: valid inputs write their scores into it
    shutil.copytree(trained_work, work)
    video = make(tmp_path)
    before = snapshot(work)
    res = CliRunner().invoke(cli, ["score", str(video), "--work", str(work), "-q"])  # into WORK/scores/<clip>, the default
    if message is None:  # awkward but valid
        assert res.exit_code == 0, res.output
        assert (work / "scores" / (video.stem if video.is_file() else video.name) / "scores.csv").exists()
        return
    assert res.exit_code == 1, res.output
    line = res.output.strip()
    assert "\n" not in line and line.startswith("error: ") and message in line, res.output
    assert "Traceback" not in res.output
    assert snapshot(work) == before, "something was written (or left) in the work folder for a refused input"


def test_debug_shows_the_traceback(trained_work, tmp_path):
    from cuboid_ad.core.errors import InputError

    args = ["score", str(tmp_path / "missing.mkv"), "--work", str(trained_work)]
    res = CliRunner().invoke(cli, [*args, "--debug"])
    assert isinstance(res.exception, InputError), "--debug lets the original error through, with its traceback"
    res = CliRunner().invoke(cli, args)
    assert type(res.exception) is SystemExit and res.exit_code == 1 and res.output.startswith("error: ")


def test_truncated_video_is_usable_with_allow_damaged(trained_work, tmp_path):
    video = make_truncated(tmp_path)
    refused = CliRunner().invoke(cli, ["score", str(video), "--work", str(trained_work), "--out", str(tmp_path / "o"), "-q"])
    kept = int(refused.output.split("decoding stopped after ")[1].split(" frames")[0])
    assert refused.exit_code == 1 and 8 <= kept < 40, refused.output
    res = CliRunner().invoke(cli, ["score", str(video), "--work", str(trained_work), "--out", str(tmp_path / "o"), "-q", "--allow-damaged"])
    assert res.exit_code == 0, res.output
    assert f"{video}: damaged, kept the {kept} frames that decode" in res.output, "the warning names the file and the frames kept"
    rows = (tmp_path / "o" / "scores.csv").read_text().splitlines()
    assert len(rows) == kept + 1 and f"{kept} frames" in res.output, "every frame that decodes is scored, and only those"


def test_extract_processes_the_good_clips_and_lists_the_bad_ones(tmp_path, tiny_cfg):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    _clip(data / "train" / "good.mkv")
    make_truncated(data / "train")
    (data / "train" / "whole.mkv").unlink()
    make_noise(data / "train")
    make_short(data / "train")
    cfg = tmp_path / "c.toml"
    from cuboid_ad.core.config import to_toml

    cfg.write_text(to_toml(tiny_cfg))
    work = tmp_path / "work"
    res = CliRunner().invoke(cli, ["extract", "--data", str(data), "--work", str(work), "--config", str(cfg), "-q"])
    assert res.exit_code == 1
    assert "2 of 4 clips failed" in res.output and "truncated.mkv" in res.output and "noise.mp4" in res.output
    assert sorted(p.name for p in (work / "frames").glob("*.h5")) == ["good.h5", "short.h5"]
    # the 5-frame clip extracts, but cannot make a window: cuboids reports it and slices the rest
    res = CliRunner().invoke(cli, ["cuboids", "--data", str(data), "--work", str(work), "--config", str(cfg), "-q"])
    assert res.exit_code == 1 and "1 of 2 clips failed" in res.output and "shorter than one window" in res.output
    assert (work / "cuboids" / "r0c0" / "good.h5").exists() and not (work / "cuboids" / "r0c0" / "short.h5").exists()


CONFIG_CASES = [
    ("unknown key", "[cuboids]\ngrid_rowz = 2\n", "unknown key(s) cuboids.grid_rowz"),
    ("impossible value", "[train]\nval_fraction = 0.9\n", "train.val_fraction must be"),
    ("grid larger than the frame", "[extract]\nframe_height = 64\n[cuboids]\ngrid_rows = 12\n", "fewer rows/columns"),
    ("window longer than any clip", "[extract]\nframe_height = 64\n[cuboids]\nclip_length_in_frames = 200\nframes_between_clips = 2\n", "shorter than one window"),
]


@pytest.mark.parametrize("what, text, message", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(what, text, message, tiny_data, tmp_path):
    (tmp_path / "c.toml").write_text(text)
    work = tmp_path / "work"
    args = ["--data", str(tiny_data), "--work", str(work), "--config", str(tmp_path / "c.toml"), "-q"]
    results = [CliRunner().invoke(cli, [stage, *args]) for stage in ("extract", "cuboids")]
    failed = [r for r in results if r.exit_code != 0]
    assert failed, "a bad config was accepted"
    assert failed[0].exit_code == 1 and message in failed[0].output and failed[0].output.count("\n") == 1


def test_labels_that_do_not_match_the_clips(trained_work, tiny_data, tmp_path):
    wrong_count = tmp_path / "count.json"
    wrong_count.write_text(json.dumps({"01": {"frames": 99, "anomalous": [[1, 5]]}}))
    res = CliRunner().invoke(cli, ["evaluate", "--data", str(tiny_data), "--work", str(trained_work), "--labels", str(wrong_count), "--out", str(tmp_path / "e1"), "-q"])
    assert res.exit_code == 1 and "frame counts do not match" in res.output and "01 (80 decoded, 99 labelled)" in res.output
    assert not (tmp_path / "e1" / "metrics.json").exists()
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"02": {"frames": 80, "anomalous": []}}))
    res = CliRunner().invoke(cli, ["evaluate", "--data", str(tiny_data), "--work", str(trained_work), "--labels", str(missing), "-q"])
    assert res.exit_code == 1 and "no labels for clip(s) 01" in res.output
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"01": {"frames": 80, "anomalous": [[70, 90]]}}))
    res = CliRunner().invoke(cli, ["evaluate", "--data", str(tiny_data), "--work", str(trained_work), "--labels", str(broken), "-q"])
    assert res.exit_code == 1 and "outside frames 1..80" in res.output


def test_truncated_and_foreign_artifacts_are_refused(trained_work, tmp_path, tiny_data):
    import shutil

    work = tmp_path / "work"
    shutil.copytree(trained_work, work)
    ckpt = work / "models" / "r1c1.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    res = CliRunner().invoke(cli, ["score", str(tiny_data / "test" / "01.mkv"), "--work", str(work), "-q"])
    assert res.exit_code == 1 and "r1c1.pt: not a readable checkpoint" in res.output
    (work / "models" / "manifest.json").write_text("{}")
    res = CliRunner().invoke(cli, ["score", str(tiny_data / "test" / "01.mkv"), "--work", str(work), "-q"])
    assert res.exit_code == 1 and "not a cuboid-ad manifest" in res.output
    frames = work / "frames" / "01.h5"
    frames.write_bytes(b"not hdf5 at all")
    res = CliRunner().invoke(cli, ["cuboids", "--work", str(work), "-q"])
    assert res.exit_code == 1 and "01.h5: not a readable HDF5 file" in res.output


def test_manifest_cannot_point_outside_the_models_folder(trained_work, tmp_path, tiny_data):
    import shutil

    work = tmp_path / "work"
    shutil.copytree(trained_work, work)
    path = work / "models" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["regions"][0]["checkpoint"] = "../../elsewhere.pt"
    path.write_text(json.dumps(manifest))
    res = CliRunner().invoke(cli, ["score", str(tiny_data / "test" / "01.mkv"), "--work", str(work), "-q"])
    assert res.exit_code == 1 and "points outside the models folder" in res.output


def test_a_second_writer_is_stopped_with_a_message(trained_work, tiny_data):
    with work_lock(trained_work, exclusive=False):  # a score is running
        res = CliRunner().invoke(cli, ["train", "--work", str(trained_work), "-q"])
    assert res.exit_code == 1 and "is in use" in res.output
    with work_lock(trained_work, exclusive=True):  # a stage is writing
        res = CliRunner().invoke(cli, ["score", str(tiny_data / "test" / "01.mkv"), "--work", str(trained_work), "-q"])
    assert res.exit_code == 1 and "is in use" in res.output


def test_readers_do_not_block_each_other(trained_work, tiny_data, tmp_path):
    with work_lock(trained_work, exclusive=False):  # another score is running
        res = CliRunner().invoke(cli, ["score", str(tiny_data / "test" / "01.mkv"), "--work", str(trained_work), "--out", str(tmp_path / "o"), "-q", "--no-maps"])
    assert res.exit_code == 0, res.output
