"""Stages on a real Dask cluster (distributed.LocalCluster, 2 worker processes of 1 thread, started here):
the same frames, tubes and models as a local run, a worker killed mid-training, a killed client,
a fleet with a broken camera, and workers that cannot see the work folder."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import same_streams
from test_interrupt import DEADLINE_S, ROOT, start, temporaries, wait_for

from bench.watch import free_port, listening
from cuboid_ad.core.artifacts import remove_stale_temporaries
from cuboid_ad.core.cluster import connect, local_cluster
from cuboid_ad.core.config import to_toml
from cuboid_ad.core.errors import UserError
from cuboid_ad.core.workdir import WorkDir
from cuboid_ad.ensemble.detector import read_checkpoint
from cuboid_ad.pipeline.media.synthetic import make_dataset
from cuboid_ad.pipeline.stages.evaluate import evaluate
from cuboid_ad.pipeline.stages.extract import extract_folder
from cuboid_ad.pipeline.stages.slice import slice_folder
from cuboid_ad.pipeline.stages.train import partial_path, train_ensemble


@pytest.fixture(scope="module")
def address():
    with local_cluster(2) as addr:
        yield addr


def _same_models(a: Path, b: Path, region_ids: list[str]) -> None:
    for rid in region_ids:
        x, y = read_checkpoint(a / f"{rid}.pt"), read_checkpoint(b / f"{rid}.pt")
        for key, tensor in x["state_dict"].items():
            assert torch.equal(tensor, y["state_dict"][key]), f"{rid}: {key} differs from the local run"
        assert same_streams(x, y) and x["history"]["val_loss"] == y["history"]["val_loss"], rid


def _h5_arrays(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as fh:
        fh.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _copy_inputs(src: Path, dst: Path) -> WorkDir:
    for sub in ("frames", "cuboids"):
        shutil.copytree(src / sub, dst / sub, copy_function=shutil.copy2)  # mtimes identify the tubes
    return WorkDir(dst)


def test_every_stage_on_the_cluster_gives_the_local_result(address, tmp_path, tiny_data, tiny_cfg, trained_work):
    wd, local = WorkDir(tmp_path / "work"), WorkDir(trained_work)
    with connect(address, [wd.root]) as cluster:
        assert cluster.workers == 2
        extract_folder(tiny_data / "train", wd.frames, tiny_cfg, cluster=cluster)
        slice_folder(wd.frames, wd.cuboids, tiny_cfg, cluster=cluster)
        train_ensemble(wd.cuboids, wd.models, tiny_cfg, threads=1, cluster=cluster)  # the local run's threads=1
        got = evaluate(tiny_data / "test", tiny_data / "labels.json", wd.models, tmp_path / "eval", cluster=cluster)
    for path in sorted(local.frames.glob("*.h5")):
        a, b = _h5_arrays(path), _h5_arrays(wd.frames / path.name)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), path.name
    tubes = sorted(p.relative_to(local.cuboids) for p in local.cuboids.rglob("*.h5"))
    assert tubes == sorted(p.relative_to(wd.cuboids) for p in wd.cuboids.rglob("*.h5"))
    for rel in tubes:
        a, b = _h5_arrays(local.cuboids / rel), _h5_arrays(wd.cuboids / rel)
        assert all(np.array_equal(a[k], b[k]) for k in a), rel
    _same_models(local.models, wd.models, tiny_cfg.cuboids.region_ids)
    want = evaluate(tiny_data / "test", tiny_data / "labels.json", local.models, tmp_path / "eval-local")
    assert got["auc_pooled_raw"] == pytest.approx(want["auc_pooled_raw"], abs=1e-6) and got["auc_pooled_raw"] > 0.8
    assert got["at_threshold"] == want["at_threshold"]
    assert not temporaries(wd.root)


def test_a_worker_killed_mid_training_loses_nothing(tmp_path, tiny_cfg, trained_work, caplog):
    wd = _copy_inputs(trained_work, tmp_path / "work")
    errors: list[BaseException] = []
    caplog.set_level(logging.INFO, logger="cuboid_ad.pipeline.stages.train")
    with local_cluster(2) as addr, connect(addr, [wd.root]) as cluster:
        pids = cluster.client.run(os.getpid)

        def train() -> None:
            try:
                train_ensemble(wd.cuboids, wd.models, tiny_cfg, threads=1, cluster=cluster)
            except BaseException as exc:  # handed to the test's thread
                errors.append(exc)

        runner = threading.Thread(target=train)
        runner.start()
        # kill a worker once the region it is training has saved an epoch
        deadline, killed = time.monotonic() + DEADLINE_S, None
        while killed is None and runner.is_alive():
            assert time.monotonic() < deadline, "no region saved an epoch"
            for worker, keys in cluster.client.processing().items():
                rids = [str(k).split("-")[1] for k in keys if str(k).startswith("train-")]
                if rids and partial_path(wd.models, rids[0]).exists():
                    os.kill(pids[worker], signal.SIGKILL)
                    killed = rids[0]
                    break
            time.sleep(0.01)
        assert killed, "training ended before a worker could be killed: the test proved nothing"
        runner.join(DEADLINE_S)
    assert not runner.is_alive() and not errors, errors
    assert f"{killed} resumed after epoch" in caplog.text, "the killed worker's region was not resumed from its last epoch"
    assert (wd.models / "manifest.json").exists()
    assert not list(wd.models.glob("*.partial.pt")) and not temporaries(wd.root)
    _same_models(trained_work / "models", wd.models, tiny_cfg.cuboids.region_ids)  # the uninterrupted result


def test_a_finished_task_is_not_run_again_when_its_worker_dies(tmp_path):
    """A result the client already has must not be recomputed when the worker that made it dies: Dask
    recomputes lost results that are still wanted, and a training task run twice trains its region
    again and, cancelled at the end, leaves its epoch state behind (docs/known-issues.md)."""
    marks = tmp_path / "marks"
    marks.mkdir()

    def task(kind: str, marks: Path) -> int:
        import os
        import time
        import uuid

        if kind == "quick":
            (marks / f"quick-{uuid.uuid4().hex}").touch()
        else:  # outlives the kill, and ends early if the quick task runs a second time
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and len(list(marks.glob("quick-*"))) < 2:
                time.sleep(0.05)
        return os.getpid()

    with local_cluster(3) as addr, connect(addr, [tmp_path]) as cluster:
        def on_done(i: int, pid: int) -> None:
            if i == 0:  # the quick task's result is in hand: kill the worker that holds its copy
                deadline = time.monotonic() + 3.0
                while time.monotonic() < deadline and cluster.client.run_on_scheduler(
                    lambda dask_scheduler: any(str(k).startswith("quick-") for k in dask_scheduler.tasks)
                ):
                    time.sleep(0.05)
                os.kill(pid, signal.SIGKILL)

        cluster.run(task, [("quick", marks), ("slow", marks)], ["quick", "slow"], on_done=on_done)
    assert len(list(marks.glob("quick-*"))) == 1, "the quick task ran again after its worker died"


def test_a_killed_client_stops_its_tasks_and_the_next_run_resumes(address, tmp_path, tiny_cfg, trained_work):
    wd = _copy_inputs(trained_work, tmp_path / "work")
    (tmp_path / "cfg.toml").write_text(to_toml(tiny_cfg))
    args = ["train", "--work", str(wd.root), "--config", str(tmp_path / "cfg.toml"), "--threads", "1", "--scheduler", address]
    proc = start(args)

    def snapshots() -> dict[Path, int]:
        return {p: p.stat().st_mtime_ns for p in wd.models.glob("*.partial.pt") if p.exists()}

    # how often a snapshot is written while the run is alive: one epoch, measured on this machine as it is loaded now
    wait_for(lambda: bool(snapshots()), proc, "the first epoch's snapshot")
    t0, seen = time.monotonic(), snapshots()
    wait_for(lambda: any(snapshots().get(p, t) != t for p, t in seen.items()), proc, "a second epoch's snapshot")
    epoch = time.monotonic() - t0
    assert proc.poll() is None, "training ended before the client could be killed"
    proc.kill()
    proc.wait(DEADLINE_S)
    # its tasks notice that nobody waits for them and stop at the next batch: the snapshots stop changing for
    # three epochs' worth of time; tasks that trained on would change one every epoch until the deadline
    deadline, last, changed = time.monotonic() + DEADLINE_S, snapshots(), time.monotonic()
    while time.monotonic() - changed < 3 * epoch:
        assert time.monotonic() < deadline, f"orphaned tasks are still training ({epoch:.2f} s an epoch)"
        time.sleep(0.05)
        now = snapshots()
        if now != last:
            last, changed = now, time.monotonic()
    assert last, "no snapshot left: the killed run's tasks finished, so nothing showed that they stop"
    res = subprocess.run([sys.executable, "cli.py", *args, "-q"], cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    assert res.returncode == 0, res.stderr
    _same_models(trained_work / "models", wd.models, tiny_cfg.cuboids.region_ids)


def test_a_fleet_with_a_broken_camera_finishes_the_others(tmp_path, tiny_cfg):
    cfg = tiny_cfg.with_overrides(train={"epochs": 2})
    (tmp_path / "tiny.toml").write_text(to_toml(cfg))
    lines = ['config = "tiny.toml"']
    for i, name in enumerate(["lobby", "gate", "yard"]):
        make_dataset(tmp_path / name, width=96, height=64, n_train=2, frames_per_clip=40, anomalies=("fast",), seed=i)
        lines += [f"[cameras.{name}]", f'data = "{name}"', f'work = "work/{name}"']
    (tmp_path / "yard" / "train" / "02.mkv").write_bytes(b"not a video")
    (tmp_path / "fleet.toml").write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, "cli.py", "fleet", "train", str(tmp_path / "fleet.toml"), "--workers", "2", "-q"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "error: 1 of 3 cameras failed: yard" and "Traceback" not in res.stderr, res.stderr
    table = {line.split()[0]: line for line in res.stdout.splitlines()}
    assert " ok " in table["lobby"] and " ok " in table["gate"], res.stdout
    assert "error" in table["yard"] and "02.mkv: not a video ffmpeg can read" in table["yard"], res.stdout
    for name in ("lobby", "gate"):
        assert (tmp_path / "work" / name / "models" / "manifest.json").exists()
    assert not (tmp_path / "work" / "yard" / "models" / "manifest.json").exists()
    evaluated = subprocess.run(cmd[:3] + ["evaluate"] + cmd[4:], cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S, check=False)
    rows = {line.split()[0]: line for line in evaluated.stdout.splitlines()}
    assert "AUC" in rows["lobby"] and "AUC" in rows["gate"] and "run `train` first" in rows["yard"], evaluated.stdout


def test_an_unreachable_scheduler_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="cannot reach the Dask scheduler"), connect(f"tcp://127.0.0.1:{free_port()}", [tmp_path], timeout=2):
        pass


@pytest.mark.real
def test_a_worker_that_cannot_see_the_work_folder_is_refused(tmp_path):
    """The worker runs in its own mount namespace with an empty tmpfs over the test's folder."""
    hidden = tmp_path / "shared"
    hidden.mkdir()
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", f"mount -t tmpfs none {hidden}"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private mount namespace here (unshare: {probe.stderr.decode().strip()})")
    port = free_port()
    dask = str(Path(sys.executable).with_name("dask"))
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]  # fmt: skip
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not listening(port):
            assert time.monotonic() < deadline and procs[0].poll() is None, "the scheduler did not start"
            time.sleep(0.1)
        worker = f"mount -t tmpfs none {hidden} && exec {dask} worker tcp://127.0.0.1:{port} --nthreads 1 --no-nanny"
        procs.append(subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", worker],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        refused = pytest.raises(UserError, match=r"storage every Dask worker sees.*cannot see .*shared/work")
        with refused, connect(f"tcp://127.0.0.1:{port}", [hidden / "work"], timeout=60):
            pass
        assert not list((hidden / "work").glob(".cluster-probe-*")), "the probe file was left behind"
    finally:
        for p in procs:
            p.kill()
            p.wait()
    remove_stale_temporaries(hidden)


def test_a_local_cluster_leaves_this_process_environment_as_it_was():
    """Dask's nannies run in this process and set OMP_NUM_THREADS and the like here before spawning
    workers; left behind, they would change the arithmetic of every command started afterwards."""
    before = dict(os.environ)
    with local_cluster(1):
        pass
    assert dict(os.environ) == before


def test_extract_cuboids_and_evaluate_from_the_cli_run_on_the_scheduler_named_by_option_or_environment(tmp_path, tiny_data, tiny_cfg, trained_work):
    """Which tasks the scheduler ran is read from its own transition log: a stage that ignored --scheduler
    (or CUBOID_AD_SCHEDULER) would run here, in threads, and leave no key of its kind there."""
    from distributed import Client

    wd = WorkDir(tmp_path / "work")
    (tmp_path / "cfg.toml").write_text(to_toml(tiny_cfg))
    shutil.copytree(trained_work / "models", wd.models)
    common = ["--work", str(wd.root), "--config", str(tmp_path / "cfg.toml"), "-q"]
    with local_cluster(1) as addr:

        def cli(*args: str, env: dict | None = None) -> None:
            res = subprocess.run([sys.executable, "cli.py", *args, *common], cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S,
                                 env={**os.environ, **(env or {})}, check=False)  # fmt: skip
            assert res.returncode == 0, res.stderr

        cli("extract", "--data", str(tiny_data), env={"CUBOID_AD_SCHEDULER": addr})
        cli("cuboids", "--scheduler", addr)
        cli("evaluate", "--data", str(tiny_data), "--scheduler", addr)
        with Client(addr, timeout=30) as client:
            keys = client.run_on_scheduler(lambda dask_scheduler: sorted({str(t[0]) for t in dask_scheduler.transition_log}))
    ran = {kind: sorted({k.rsplit("-", 1)[0] for k in keys if k.startswith(kind + "-")}) for kind in ("extract", "cuboids", "score")}
    clips = sorted((tiny_data / "train").glob("*.mkv"))
    assert ran["extract"] == [f"extract-{c.name}" for c in clips], keys
    assert ran["cuboids"] == [f"cuboids-{c.stem}" for c in clips], keys
    assert ran["score"] == [f"score-{p.stem}" for p in sorted((tiny_data / "test").glob("*.mkv"))], keys
