"""The command line, through click's CliRunner: exit codes, messages, files."""

import json

import pytest
from click.testing import CliRunner

from cli import cli


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def test_help_lists_every_stage(runner):
    res = runner.invoke(cli, ["--help"])
    assert res.exit_code == 0
    for cmd in ("extract", "cuboids", "train", "score", "evaluate", "heatmap", "config", "demo-data"):
        assert cmd in res.output
    res = runner.invoke(cli, ["score", "--help"])
    assert res.exit_code == 0 and "scores.csv" in res.output and "--heatmaps" in res.output


def test_config_prints_toml_that_reads_back(runner, tmp_path):
    res = runner.invoke(cli, ["config", "--preset", "paper"])
    assert res.exit_code == 0 and "filters = [64, 128]" in res.output
    (tmp_path / "c.toml").write_text(res.output)
    again = runner.invoke(cli, ["config", "--config", str(tmp_path / "c.toml")])
    assert again.output == res.output


def test_a_bad_config_key_is_one_line_and_exit_1(runner, tmp_path):
    (tmp_path / "c.toml").write_text("[cuboids]\ngridrows = 2\n")
    res = runner.invoke(cli, ["extract", "--data", str(tmp_path), "--work", str(tmp_path / "w"), "--config", str(tmp_path / "c.toml")])
    assert res.exit_code == 1
    assert res.output.strip().count("\n") == 0 and res.output.startswith("error: ") and "cuboids.gridrows" in res.output
    assert not (tmp_path / "w").exists()


def test_scoring_a_missing_video_is_one_line_and_exit_1(runner, trained_work, tmp_path):
    res = runner.invoke(cli, ["score", str(tmp_path / "nope.mkv"), "--work", str(trained_work)])
    assert res.exit_code == 1 and res.output == f"error: {tmp_path / 'nope.mkv'}: no such file or folder\n"


def test_score_with_models_of_another_config_names_the_difference(runner, trained_work, tiny_data):
    res = runner.invoke(cli, ["score", str(tiny_data / "test" / "01.mkv"), "--work", str(trained_work), "--preset", "paper", "-q"])
    assert res.exit_code == 1 and "model.filters" in res.output


def test_whole_chain_through_the_cli(runner, tiny_data, tiny_cfg, tmp_path):
    from core.config import to_toml

    cfg = tmp_path / "tiny.toml"
    cfg.write_text(to_toml(tiny_cfg.with_overrides(train={"epochs": 2})))
    work = tmp_path / "work"
    common = ["--data", str(tiny_data), "--work", str(work), "--config", str(cfg), "-q", "--jobs", "2"]
    for stage in ("extract", "cuboids", "train"):
        res = runner.invoke(cli, [stage, *common])
        assert res.exit_code == 0, res.output
    stamp = (work / "models" / "r0c0.pt").stat().st_mtime_ns
    res = runner.invoke(cli, ["train", *common])
    assert res.exit_code == 0 and (work / "models" / "r0c0.pt").stat().st_mtime_ns == stamp, "up-to-date models retrained"
    res = runner.invoke(cli, ["score", str(tiny_data / "test" / "01.mkv"), "--work", str(work), "--heatmaps", "-q"])
    assert res.exit_code == 0, res.output
    assert "80 frames" in res.output and "heatmaps:" in res.output
    out = work / "scores" / "01"
    assert (out / "scores.csv").exists() and (out / "maps.h5").exists() and (out / "heatmaps" / "regions_time.png").exists()
    res = runner.invoke(cli, ["heatmap", str(tiny_data / "test" / "01.mkv"), "--work", str(work), "--frames", "5,40", "-q"])
    assert res.exit_code == 0 and "frame_000040.png" in res.output
    res = runner.invoke(cli, ["evaluate", "--data", str(tiny_data), "--work", str(work), "-q"])
    assert res.exit_code == 0 and "raw scores, all frames pooled" in res.output
    assert json.loads((work / "eval" / "metrics.json").read_text())["n_frames"] == 80


def test_cuboids_refuses_frames_from_another_data_folder(runner, trained_work, tmp_path):
    res = runner.invoke(cli, ["cuboids", "--data", str(tmp_path), "--work", str(trained_work), "-q"])
    assert res.exit_code == 1 and "was extracted from" in res.output
