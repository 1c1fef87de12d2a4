"""Shared tiny data: a synthetic scene small enough to train on in seconds.

96x64 gray clips; a 2x3 grid of 32x32 regions resized to 16x16; a small
autoencoder. The session trains one ensemble that many tests reuse.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from cuboid_ad.core.config import Config
from cuboid_ad.core.progress import set_progress
from cuboid_ad.pipeline.media.decode import ffmpeg_exe
from cuboid_ad.pipeline.media.synthetic import Mover, make_dataset, render_clip, write_video

set_progress(False)

# In CI (.ci/run sets CUBOID_AD_REQUIRE_REAL=1) a test that needs a real component (a browser, an MQTT broker, a
# private mount namespace, an RTSP server) must not skip: a missing install step would hide behind the skip.
REQUIRE_REAL = os.environ.get("CUBOID_AD_REQUIRE_REAL") == "1"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "real: needs a real component; with CUBOID_AD_REQUIRE_REAL=1 its skip fails the run")
    try:  # the same examples on every run in CI, so that a failure is reproduced by running again
        from hypothesis import settings

        settings.register_profile("ci", derandomize=True, print_blob=True)
        if REQUIRE_REAL:
            settings.load_profile("ci")
    except ImportError:  # pragma: no cover - hypothesis is a test dependency
        pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_REAL and report.skipped and item.get_closest_marker("real") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} needs a real component and was skipped ({reason}); CUBOID_AD_REQUIRE_REAL=1 forbids that: install it"

# the same arithmetic on every machine: the models of the quality floors below (AUC >= 0.9 and
# the like) are trained and scored with 2 torch threads however many cores there are
TORCH_THREADS = 2
torch.set_num_threads(TORCH_THREADS)

TINY = {
    "extract": {"frame_height": 64},
    "cuboids": {"grid_rows": 2, "grid_cols": 3, "patch_size": 16, "clip_length_in_frames": 8, "frames_between_clips": 2},
    "model": {"filters": [8, 16], "bottleneck_channels": 4},
    "train": {"epochs": 12, "batch_size": 16, "val_block_frames": 20, "patience": 4, "learning_rate": 0.003},
    # the alarm at 5% of held-out frames only: the tiny clips hold 6 s of held-out footage, far too little for an
    # estimate of false events an hour (tests/ensemble/test_alarms.py and test_feedback.py test that rule)
    "score": {"frames_between_clips": 4, "false_events_per_hour": 0.0},
}
WIDTH, HEIGHT = 96, 64


@pytest.fixture(scope="session")
def tiny_cfg() -> Config:
    return Config.from_dict(TINY)


def as_motion_jpeg(src: Path, dst: Path) -> Path:
    """``src`` re-encoded as Motion JPEG in AVI at ``-q:v 2``, with the standard Huffman tables RTP/JPEG (RFC 2435)
    assumes: the stream a network camera serves over RTSP."""
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(src), "-pix_fmt", "yuvj420p", "-c:v", "mjpeg", "-huffman", "default",
                    "-q:v", "2", "-f", "avi", str(dst)], check=True, timeout=60)  # fmt: skip
    return dst


def cut_as(monkeypatch) -> list[bool]:
    """Spy on every tube cutter made from here on: whether it was made for an inter-coded stream (the blocks read while
    the night filter is off: cuboids.camera.Denoiser.inter_coded), in the order they were made."""
    from cuboid_ad.cuboids.slicing import TubeCutter

    made, init = [], TubeCutter.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self.denoiser.inter_coded)

    monkeypatch.setattr(TubeCutter, "__init__", spy)
    return made


def as_h264(clip, out):
    """``clip`` through H.264 (what most cameras stream), at a rate that keeps it close to the original."""
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(clip), "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", str(out)], check=True, timeout=60)
    return out


def injected_mover(first: int = 30) -> Mover:
    """A bright square crossing region r1c2 (rows 32-63, cols 64-95), where nothing normal goes.

    It moves, as an intruder does: the default model sees optical flow,
    so an object that stands still becomes invisible to it once it stops.
    """
    return Mover(first, 40.0, 72.0, 0.3, 0.5, 5.0, 245, "square")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """train/ (4 normal clips of 80 frames), test/01.mkv with an anomaly injected in r1c2, labels.json."""
    root = tmp_path_factory.mktemp("data")
    make_dataset(root, width=WIDTH, height=HEIGHT, n_train=4, frames_per_clip=80, anomalies=())
    frames, in_view = render_clip(80, HEIGHT, WIDTH, seed=777, extra=[injected_mover()])
    write_video(frames, root / "test" / "01.mkv")
    first, last = np.flatnonzero(in_view)[[0, -1]] + 1
    (root / "labels.json").write_text(f'{{"01": {{"frames": 80, "anomalous": [[{first}, {last}]]}}}}')
    return root


@pytest.fixture(scope="session")
def trained_work(tmp_path_factory, tiny_data, tiny_cfg) -> Path:
    """A work folder with frames, cuboids and models of tiny_data, made by the library functions."""
    from cuboid_ad.core.workdir import WorkDir
    from cuboid_ad.pipeline.stages.extract import extract_folder
    from cuboid_ad.pipeline.stages.slice import slice_folder
    from cuboid_ad.pipeline.stages.train import train_ensemble

    wd = WorkDir(tmp_path_factory.mktemp("work"))
    extract_folder(tiny_data / "train", wd.frames, tiny_cfg, n_jobs=2)
    slice_folder(wd.frames, wd.cuboids, tiny_cfg, n_jobs=2)
    train_ensemble(wd.cuboids, wd.models, tiny_cfg, n_jobs=2, threads=1)
    return wd.root


@pytest.fixture
def frames_video(tmp_path) -> tuple[np.ndarray, Path]:
    """40 random-ish gray frames and their lossless video."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(40, 48, 64), dtype=np.uint8)
    return frames, write_video(frames, tmp_path / "clip.mkv")


def same_streams(a: dict, b: dict) -> bool:
    """Whether two checkpoints' streams learned exactly the same: statistics equal, references (code banks) equal bit for bit."""
    if a["streams"].keys() != b["streams"].keys():
        return False
    for name, x in a["streams"].items():
        y = b["streams"][name]
        if x["stats"] != y["stats"] or ("reference" in x) != ("reference" in y):
            return False
        if "reference" in x and not torch.equal(x["reference"], y["reference"]):
            return False
    return True


@contextlib.contextmanager
def serving(app, timeout: float = 30.0) -> Iterator[int]:
    """``app`` on a real uvicorn in a thread, on a loopback socket bound here and held (no free-port probe that
    another process could take before the server binds it); yields the port, stops the server on exit."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
