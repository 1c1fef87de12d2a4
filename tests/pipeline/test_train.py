"""What `train` redoes: nothing when up to date, only the statistics when only [score] changed or the
checkpoint is of an older format, everything when the weights' inputs changed; and what it resumes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from cuboid_ad.core.workdir import WorkDir
from cuboid_ad.cuboids.store import tube_files
from cuboid_ad.ensemble.detector import read_checkpoint
from cuboid_ad.ensemble.ensemble import Ensemble
from cuboid_ad.pipeline.stages.train import fit_region, partial_path, region_status, train_ensemble


@pytest.fixture
def copied(trained_work, tmp_path) -> WorkDir:
    wd = WorkDir(tmp_path / "w")
    for part in ("cuboids", "models"):  # copy2 keeps mtimes: they identify the tubes
        shutil.copytree(getattr(WorkDir(trained_work), part), getattr(wd, part), copy_function=shutil.copy2)
    return wd


def test_status_of_a_checkpoint_says_what_to_redo(copied, tiny_cfg):
    path, clips = copied.models / "r0c0.pt", tube_files(copied.cuboids, "r0c0")
    assert region_status(path, tiny_cfg, clips) == "fresh"
    assert region_status(path, tiny_cfg.with_overrides(score={"false_alarm_rate": 0.02}), clips) == "recalibrate"
    assert region_status(path, tiny_cfg.with_overrides(train={"epochs": 3}), clips) == "train"
    assert region_status(path, tiny_cfg.with_overrides(cuboids={"blur_sigma": 0.5}), clips) == "train"
    assert region_status(path, tiny_cfg, {**clips, "05": "1:2"}) == "train", "a training clip was added"
    assert region_status(path, tiny_cfg, {**clips, "01": "1:2"}) == "train", "a training clip changed"
    path.write_bytes(path.read_bytes()[:300])
    assert region_status(path, tiny_cfg, clips) == "train", "an unreadable checkpoint"


def test_only_score_changed_recalibrates_and_keeps_the_weights(copied, tiny_cfg):
    before = {rid: read_checkpoint(copied.models / f"{rid}.pt") for rid in tiny_cfg.cuboids.region_ids}
    looser = tiny_cfg.with_overrides(score={"statistics": "cell", "explained_motion_max": 0.5, "false_alarm_rate": 0.01})
    train_ensemble(copied.cuboids, copied.models, looser, n_jobs=2)
    for rid, old in before.items():
        new = read_checkpoint(copied.models / f"{rid}.pt")
        for key, tensor in old["state_dict"].items():
            assert torch.equal(tensor, new["state_dict"][key]), f"{rid}: {key} retrained"
        assert new["history"]["val_loss"] == old["history"]["val_loss"]
        assert max(new["streams"]["reconstruction"]["stats"]["slope"]) <= 0.5, "the statistics follow the new [score]"
        assert max(old["streams"]["reconstruction"]["stats"]["slope"]) == 0.0 and max(new["streams"]["reconstruction"]["stats"]["slope"]) > 0.0, "region statistics explain no motion"
    assert Ensemble.load(copied.models, looser).cfg == looser


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_checkpoint_keeps_its_weights_and_gets_new_statistics(copied, tiny_cfg, version):
    path = copied.models / "r1c2.pt"
    ck = torch.load(path, weights_only=True)
    weights = {k: v.clone() for k, v in ck["state_dict"].items()}
    ck["format_version"] = version  # 1: before per-cell statistics; 2: before the stream registry
    del ck["streams"]
    if version == 1:
        del ck["held_out_scores"]
        ck["stats"] = {"mean": 1.0, "std": 1.0, "threshold": 3.0}
    else:
        ck["stats"] = {"offset": [0.0], "mean": [1.0], "std": [1.0]}
    torch.save(ck, path)
    assert region_status(path, tiny_cfg, tube_files(copied.cuboids, "r1c2")) == "recalibrate"
    train_ensemble(copied.cuboids, copied.models, tiny_cfg, n_jobs=2)
    again = read_checkpoint(path)
    assert again["format_version"] == 3 and list(again["streams"]) == ["reconstruction", "novelty"]
    assert len(again["streams"]["reconstruction"]["stats"]["slope"]) == (16 // tiny_cfg.score.cell_size) ** 2
    assert all(torch.equal(weights[k], again["state_dict"][k]) for k in weights)


def test_a_partial_state_of_another_config_or_an_unreadable_one_is_not_resumed(copied, tiny_cfg, tmp_path):
    cfg = tiny_cfg.with_overrides(train={"epochs": 2})
    clean = tmp_path / "clean"
    clean.mkdir()
    fit_region(copied.cuboids, clean, "r0c0", cfg)
    reference = read_checkpoint(clean / "r0c0.pt")["state_dict"]
    for junk in (b"not a checkpoint", None):
        out = tmp_path / f"run-{junk is None}"
        out.mkdir()
        if junk is None:  # a readable partial state, but of another config (resuming its bogus snapshot would crash)
            torch.save({"config": tiny_cfg.to_json(), "training_clips": tube_files(copied.cuboids, "r0c0"),
                        "snapshot": {"state": {"epoch": 0}}}, partial_path(out, "r0c0"))  # fmt: skip
        else:
            partial_path(out, "r0c0").write_bytes(junk)
        fit_region(copied.cuboids, out, "r0c0", cfg)
        got = read_checkpoint(out / "r0c0.pt")["state_dict"]
        assert all(torch.equal(reference[k], got[k]) for k in reference), "a clean run's weights"
        assert not partial_path(out, "r0c0").exists()
        assert np.isfinite(read_checkpoint(out / "r0c0.pt")["held_out_scores"].numpy()).all()
