"""Random and mutated video bytes never crash extraction: a clip either extracts or is refused
with an InputError, and nothing but complete files is left behind."""

import numpy as np
import pytest

from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import InputError
from cuboid_ad.core.frames import read_frames_info
from cuboid_ad.pipeline.media.synthetic import render_clip, write_video
from cuboid_ad.pipeline.stages.extract import extract_clip

N_INPUTS = 60  # a fixed number of inputs, not a time budget: the same inputs on any machine
CFG = Config.from_dict({"extract": {"frame_height": 32}})


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    d = tmp_path_factory.mktemp("seeds")
    frames, _ = render_clip(12, 48, 64, seed=1)
    out = [write_video(frames, d / "a.mkv").read_bytes()]
    import subprocess

    from cuboid_ad.pipeline.media.decode import ffmpeg_exe

    for name, codec in (("b.mp4", "libx264"), ("c.avi", "mjpeg")):
        subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-i", str(d / "a.mkv"), "-c:v", codec, "-pix_fmt", "yuv420p" if codec != "mjpeg" else "yuvj420p", str(d / name)],
            check=True,
        )
        out.append((d / name).read_bytes())
    return out


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = rng.integers(4)
    if kind == 0:  # flip bytes
        for i in rng.integers(0, len(b), size=int(rng.integers(1, 50))):
            b[i] = int(rng.integers(256))
    elif kind == 1:  # cut
        b = b[: int(rng.integers(1, len(b)))]
    elif kind == 2:  # splice random bytes in
        at = int(rng.integers(len(b)))
        b[at:at] = rng.bytes(int(rng.integers(1, 2000)))
    else:  # pure noise
        b = bytearray(rng.bytes(int(rng.integers(1, 20000))))
    return bytes(b)


def test_the_unmutated_seeds_extract(seeds, tmp_path):
    """The fuzz inputs start from videos that do extract, or refusing everything would pass."""
    for i, (seed, suffix) in enumerate(zip(seeds, [".mkv", ".mp4", ".avi"])):
        src = tmp_path / f"seed{i}{suffix}"
        src.write_bytes(seed)
        info = read_frames_info(extract_clip(src, tmp_path / f"seed{i}.h5", CFG), CFG)
        assert info.n_frames == 12 and info.height == 32


@pytest.mark.parametrize("allow_damaged", [False, True], ids=["refuse-damaged", "allow-damaged"])
def test_fuzz_extract(seeds, tmp_path, allow_damaged):
    """Each input is ok (complete, readable, no frame invented: at most the seed's 12) or refused in one line
    naming it, with nothing written. Both outcomes must occur, and --allow-damaged must keep more."""
    rng = np.random.default_rng(12345)
    outcomes = {"ok": 0, "refused": 0}
    for i in range(N_INPUTS):
        seed = seeds[i % len(seeds)]
        suffix = [".mkv", ".mp4", ".avi"][i % len(seeds)]
        src = tmp_path / f"in{i}{suffix}"
        src.write_bytes(mutate(seed, rng))
        dst = tmp_path / "out" / f"in{i}.h5"
        try:
            extract_clip(src, dst, CFG, allow_damaged=allow_damaged)
            info = read_frames_info(dst, CFG)  # what was written is complete and readable
            assert 0 < info.n_frames <= 12 and info.height == 32, (i, info.n_frames)
            outcomes["ok"] += 1
        except InputError as exc:
            assert str(exc).startswith(str(src)) and "\n" not in str(exc)
            assert not dst.exists()
            outcomes["refused"] += 1
        src.unlink()
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] if (tmp_path / "out").exists() else []
    assert not leftovers, f"temporaries left behind: {leftovers}"
    # the same 60 inputs every run (a fixed seed): 6 extract whole by default; noise and cut headers never do
    assert outcomes["ok"] >= (10 if allow_damaged else 3) and outcomes["refused"] >= 20, outcomes
