"""Killing a stage at any moment leaves a valid work folder, and re-running finishes the job
with the same result as an uninterrupted run."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import same_streams

from cuboid_ad.core.artifacts import open_h5
from cuboid_ad.core.config import to_toml
from cuboid_ad.core.frames import iter_frames_file
from cuboid_ad.ensemble.detector import read_checkpoint
from cuboid_ad.pipeline.media.synthetic import render_clip, write_video
from cuboid_ad.pipeline.stages.extract import extract_folder
from cuboid_ad.pipeline.stages.slice import slice_folder

ROOT = Path(__file__).resolve().parents[1]


def _default_sigint() -> None:
    # a stage started from a terminal handles Ctrl-C; one started under nohup or in a
    # background job inherits SIGINT ignored, and `train` rightly keeps ignoring it
    signal.signal(signal.SIGINT, signal.SIG_DFL)


DEADLINE_S = 300  # no step of these tests waits longer: a hang fails the test instead of blocking CI


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "cli.py", *args, "-q"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_default_sigint
    )


def finish(args: list[str]) -> None:
    res = subprocess.run([sys.executable, "cli.py", *args, "-q"], cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S)
    assert res.returncode == 0, res.stderr


def wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    """Poll ``condition`` until it holds while ``proc`` runs; fail after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while proc.poll() is None and not condition():
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"waited {DEADLINE_S} s for {what}")
        time.sleep(0.01)


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp-*")] if folder.exists() else []


def visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def train_setup(tmp_path_factory, tiny_data, tiny_cfg):
    """A work folder with frames and cuboids, ready for `train`, and the config file."""
    root = tmp_path_factory.mktemp("kill")
    cfg = tiny_cfg.with_overrides(train={"epochs": 10, "patience": 10})
    (root / "cfg.toml").write_text(to_toml(cfg))
    work = root / "prepared"
    extract_folder(tiny_data / "train", work / "frames", cfg)
    slice_folder(work / "frames", work / "cuboids", cfg)
    return root, work


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=shutil.copy2)  # keep mtimes: they identify the tubes
    return dst


def _saved_since(models: Path, since: float) -> bool:
    for path in models.glob("*.partial.pt"):
        try:
            if path.stat().st_mtime > since:
                return True
        except FileNotFoundError:  # renamed or removed while we looked
            pass
    return False


def test_train_killed_repeatedly_resumes_to_the_uninterrupted_result(train_setup, tiny_cfg):
    root, prepared = train_setup
    args = ["train", "--config", str(root / "cfg.toml"), "--jobs", "2"]
    reference = _copy(prepared, root / "reference")
    finish([*args, "--work", str(reference)])
    # seconds the slowest region spent training (start-up excluded: on a GPU it is most of a run)
    training = max(read_checkpoint(p)["history"]["seconds"] for p in (reference / "models").glob("*.pt"))

    work = _copy(prepared, root / "killed")
    rng = np.random.default_rng(7)
    partial_seen = False
    for _ in range(4):
        started = time.time()
        proc = start([*args, "--work", str(work)])
        # each kill lands inside training, however long start-up takes against training
        # (on a GPU the training is the short part): once this run has saved an epoch
        wait_for(lambda: _saved_since(work / "models", started), proc, "an epoch to be saved")
        time.sleep(float(rng.uniform(0.0, 0.5)) * training)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=DEADLINE_S)
        for path in visible_files(work / "models"):  # whatever is there is complete and loadable
            if path.name.endswith(".partial.pt"):
                partial_seen = True
                assert "snapshot" in torch.load(path, weights_only=True)
            elif path.suffix == ".pt":
                read_checkpoint(path)
    finish([*args, "--work", str(work)])
    assert partial_seen, "no kill landed during training: the test proved nothing"
    assert not list((work / "models").glob("*.partial.pt"))
    assert not temporaries(work), "temporaries of the killed runs are left"
    for rid in tiny_cfg.cuboids.region_ids:
        a = read_checkpoint(reference / "models" / f"{rid}.pt")
        b = read_checkpoint(work / "models" / f"{rid}.pt")
        for key, tensor in a["state_dict"].items():
            assert torch.equal(tensor, b["state_dict"][key]), f"{rid}: {key} differs after resuming"
        assert same_streams(a, b) and a["history"]["val_loss"] == b["history"]["val_loss"]


def test_sigint_stops_with_a_message_and_the_run_resumes(train_setup):
    root, prepared = train_setup
    work = _copy(prepared, root / "sigint")
    args = ["train", "--config", str(root / "cfg.toml"), "--jobs", "2", "--work", str(work)]
    proc = start(args)
    # interrupt once the first epoch's snapshot is written, so it lands mid-training on any machine
    wait_for(lambda: bool(list((work / "models").glob("*.partial.pt"))), proc, "the first epoch's snapshot")
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"interrupted" in err and b"Traceback" not in err, err.decode()
    finish(args)
    assert len(list((work / "models").glob("r*c*.pt"))) == 6 and (work / "models" / "manifest.json").exists()


def test_extract_killed_repeatedly_ends_with_the_same_frames(tmp_path):
    data = tmp_path / "data"
    for i in range(5):
        frames, _ = render_clip(300, 120, 160, seed=i)
        write_video(frames, data / "train" / f"{i:02d}.mkv")
    (tmp_path / "cfg.toml").write_text("[extract]\nframe_height = 120\n")
    args = ["extract", "--data", str(data), "--config", str(tmp_path / "cfg.toml"), "--jobs", "1"]
    finish([*args, "--work", str(tmp_path / "reference")])
    work = tmp_path / "killed"
    mid_write = 0
    rng = np.random.default_rng(3)
    for _ in range(4):
        proc = start([*args, "--work", str(work)])
        # kill while a frames file is being written: a moment after a temporary appears
        wait_for(lambda: bool(temporaries(work / "frames")), proc, "a frames file to be written")
        time.sleep(float(rng.uniform(0.0, 0.8)))
        mid_write += bool(temporaries(work / "frames"))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=DEADLINE_S)
        for path in visible_files(work):
            if path.suffix == ".h5":
                with open_h5(path, "frames"):
                    pass
    assert mid_write >= 2, f"only {mid_write} of 4 kills landed while a file was being written: the test proved little"
    finish([*args, "--work", str(work)])
    assert not temporaries(work), "temporaries of the killed runs are left"
    names = [p.name for p in visible_files(tmp_path / "reference" / "frames")]
    assert [p.name for p in visible_files(work / "frames")] == names and len(names) == 5
    for name in names:
        a = np.concatenate([c for _, c in iter_frames_file(tmp_path / "reference" / "frames" / name)])
        b = np.concatenate([c for _, c in iter_frames_file(work / "frames" / name)])
        assert np.array_equal(a, b)


def test_supervise_killed_then_interrupted_resumes_to_the_uninterrupted_result(tmp_path, tiny_data, tiny_cfg):
    cfg = tiny_cfg.with_overrides(supervise={"frame_height": 32, "window_frames": 4, "filters": (8, 16), "epochs": 6, "batch_size": 8})
    (tmp_path / "cfg.toml").write_text(to_toml(cfg))
    args = ["supervise", "--data", str(tiny_data), "--config", str(tmp_path / "cfg.toml")]
    finish([*args, "--work", str(tmp_path / "reference")])
    work = tmp_path / "killed"
    partial = work / "classifier" / "model.partial.pt"
    proc = start([*args, "--work", str(work)])
    wait_for(partial.exists, proc, "the first epoch's snapshot")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=DEADLINE_S)
    assert partial.exists() and not (work / "classifier" / "model.pt").exists(), "the kill did not land during training"
    first = torch.load(partial, weights_only=True)["snapshot"]["state"]["epoch"]
    proc = start([*args, "--work", str(work)])
    wait_for(lambda: torch.load(partial, weights_only=True)["snapshot"]["state"]["epoch"] > first if partial.exists() else False, proc, "a later epoch")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"interrupted" in err and b"Traceback" not in err, err.decode()
    res = subprocess.run([sys.executable, "cli.py", *args, "--work", str(work)], cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S)
    assert res.returncode == 0 and "supervise: resumed after epoch" in res.stderr, res.stderr
    assert not partial.exists() and not temporaries(work)
    a = torch.load(tmp_path / "reference" / "classifier" / "model.pt", weights_only=True)
    b = torch.load(work / "classifier" / "model.pt", weights_only=True)
    for key, tensor in a["weights"].items():
        assert torch.equal(tensor, b["weights"][key]), f"{key} differs after resuming"
    assert a["history"]["val_loss"] == b["history"]["val_loss"] and a["metrics"]["confusion"] == b["metrics"]["confusion"]
