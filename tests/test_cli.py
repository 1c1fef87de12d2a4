"""The command line, through click's CliRunner: exit codes, messages, files."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cuboid_ad.cli import cli


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def _commands(group, path=()):
    """Every command under ``group``, sub-groups (feedback, fleet) walked: (path, command)."""
    import click

    for name, cmd in sorted(group.commands.items()):
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))


def test_help_lists_every_stage(runner):
    res = runner.invoke(cli, ["--help"])
    assert res.exit_code == 0
    for cmd in ("extract", "cuboids", "train", "score", "evaluate", "heatmap", "config", "demo-data"):
        assert cmd in res.output
    res = runner.invoke(cli, ["score", "--help"])
    assert res.exit_code == 0 and "scores.csv" in res.output and "--heatmaps" in res.output


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in _commands(cli)])
def test_every_command_explains_itself_and_every_option(runner, path):
    """watch, serve, fleet, feedback, supervise, classify and report included: a paragraph saying what the
    command does, and a help text for every option and no option without one."""
    import click

    cmd = dict(_commands(cli))[tuple(path.split())]
    res = runner.invoke(cli, [*path.split(), "--help"], terminal_width=100)
    assert res.exit_code == 0, res.output
    assert len((cmd.help or "").split()) >= 6, f"`{path} --help` says too little: {cmd.help!r}"
    for param in cmd.params:
        if isinstance(param, click.Option):
            assert param.help and len(param.help.split()) >= 2, f"`{path}` {param.opts[0]} has no help"
            assert param.opts[0] in res.output


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
    from cuboid_ad.core.config import to_toml

    cfg = tmp_path / "tiny.toml"
    cfg.write_text(to_toml(tiny_cfg.with_overrides(train={"epochs": 2})))
    work = tmp_path / "work"
    common = ["--data", str(tiny_data), "--work", str(work), "--config", str(cfg), "-q", "--jobs", "2"]
    outputs = {"extract": work / "frames" / "01.h5", "cuboids": work / "cuboids" / "r0c0" / "01.h5", "train": work / "models" / "r0c0.pt"}
    for stage in ("extract", "cuboids", "train"):
        res = runner.invoke(cli, [stage, *common])
        assert res.exit_code == 0, res.output
    for stage, path in outputs.items():  # up to date: kept
        stamp = path.stat().st_mtime_ns
        res = runner.invoke(cli, [stage, *common])
        assert res.exit_code == 0 and path.stat().st_mtime_ns == stamp, f"{stage} redid up-to-date work"
    # --force, one stage at a time, the last first, so that its inputs are untouched and only --force can remake it
    for stage in ("train", "cuboids", "extract"):
        stamps = {s: p.stat().st_mtime_ns for s, p in outputs.items()}
        res = runner.invoke(cli, [stage, *common, "--force"])
        assert res.exit_code == 0, res.output
        assert outputs[stage].stat().st_mtime_ns != stamps[stage], f"{stage} --force kept its output"
        upstream = list(outputs)[: list(outputs).index(stage)]
        assert all(outputs[s].stat().st_mtime_ns == stamps[s] for s in upstream), f"{stage} --force touched what comes before it"
    for stage in ("cuboids", "train"):  # and the stages after a forced one see new inputs and follow
        res = runner.invoke(cli, [stage, *common])
        assert res.exit_code == 0, res.output
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


def test_heatmap_draws_the_frames_asked_for(runner, trained_work, tiny_data, tmp_path):
    video, out = str(tiny_data / "test" / "01.mkv"), tmp_path / "h"
    res = runner.invoke(cli, ["heatmap", video, "--work", str(trained_work), "--out", str(out), "--top", "2", "-q"])
    assert res.exit_code == 0, res.output
    drawn = sorted(p.name for p in (out / "heatmaps").glob("frame_*.png"))
    assert len(drawn) == 2, drawn
    with open(out / "scores.csv", newline="") as fh:
        import csv

        scores = {int(r["frame"]): float(r["score"]) for r in csv.DictReader(fh)}
    assert int(drawn[-1][6:12]) in sorted(scores, key=scores.get)[-12:], "--top draws high-scoring frames"
    res = runner.invoke(cli, ["heatmap", video, "--work", str(trained_work), "--out", str(out), "--frames", "3,x", "-q"])
    assert res.exit_code == 2 and "use frame numbers like 12,40,97" in res.output


def test_score_refuses_a_clip_of_another_frame_size(runner, trained_work, tmp_path):
    from cuboid_ad.pipeline.media.synthetic import render_clip, write_video

    frames, _ = render_clip(20, 64, 128, seed=5)  # wider than the models' 96 pixels at the same height
    res = runner.invoke(cli, ["score", str(write_video(frames, tmp_path / "wide.mkv")), "--work", str(trained_work), "-q"])
    assert res.exit_code == 1 and "decodes to 128x64 frames but the models were trained on 96x64" in res.output


def test_score_prints_its_events_and_stops_listing_after_twenty(runner, trained_work, tiny_data, capsys):
    from cuboid_ad.cli import _print_events
    from cuboid_ad.ensemble.events import Event
    from cuboid_ad.pipeline.stages.score import ScoreResult

    res = runner.invoke(cli, ["score", str(tiny_data / "test" / "01.mkv"), "--work", str(trained_work), "--no-maps", "-q"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].startswith("01.mkv: 80 frames (8.0 s at 10 fps)") and "1 event ->" in lines[0]
    assert len(lines) > 1 and lines[1].startswith("  event: frames ") and "r1c2" in lines[1], "the injected anomaly is an event in r1c2"
    many = [Event(10 * k, 10 * k + 3, k, k + 0.3, 10 * k + 1, k + 0.1, 30.0 + k, ("r0c0",)) for k in range(25)]
    times = np.arange(300) / 10.0
    result = ScoreResult(tiny_data / "x.mkv", 10.0, ["r0c0"], times, np.zeros(300), np.zeros(300, bool), np.zeros((300, 1)), 20.0, many, 1.0)
    _print_events(result)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 20 + 1 and out[-1] == "  ... 5 more events in events.csv"
    assert out[1] == "  event: frames 1-4  0.0-0.3 s  peak 30.0 at 0.1 s  regions r0c0"


def test_report_and_demo_data_through_the_cli(runner, trained_work, tiny_data, tmp_path):
    res = runner.invoke(cli, ["report", str(tiny_data / "test" / "01.mkv"), "--work", str(trained_work), "--out", str(tmp_path / "r"),
                              "--labels", str(tiny_data / "labels.json"), "--gallery", "2", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith(f"report: {tmp_path / 'r' / 'report.html'}") and (tmp_path / "r" / "report.mp4").exists()
    res = runner.invoke(cli, ["demo-data", "--out", str(tmp_path / "d"), "--size", "96x64", "--frames", "30", "--train-clips", "2", "-q"])
    assert res.exit_code == 0, res.output
    labels = json.loads((tmp_path / "d" / "labels.json").read_text())
    assert sorted(p.name for p in (tmp_path / "d" / "train").iterdir()) == ["01.mkv", "02.mkv"]
    assert set(labels) == {"01", "02", "03"} and all(v["frames"] == 30 for v in labels.values())
    res = runner.invoke(cli, ["demo-data", "--out", str(tmp_path / "e"), "--size", "96by64"])
    assert res.exit_code == 2 and "use WIDTHxHEIGHT" in res.output


def test_evaluate_pools_clips_and_allows_an_all_normal_one(runner, trained_work, tiny_data, tmp_path):
    import shutil

    from cuboid_ad.pipeline.media.synthetic import render_clip, write_video

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    frames, _ = render_clip(60, 64, 96, seed=901)
    write_video(frames, data / "test" / "02.mkv")
    labels = json.loads((data / "labels.json").read_text())
    labels["02"] = {"frames": 60, "anomalous": []}
    (data / "labels.json").write_text(json.dumps(labels))
    res = runner.invoke(cli, ["evaluate", "--data", str(data), "--work", str(trained_work), "--out", str(tmp_path / "e"), "-q"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["n_frames"] == 140 and m["clips"] == ["01", "02"]
    assert m["auc_per_clip"]["02"] is None and m["auc_per_clip_mean"] == m["auc_per_clip"]["01"]
    assert m["at_threshold"]["tp"] + m["at_threshold"]["fn"] == m["n_anomalous_frames"] < m["n_frames"]
    (data / "labels.json").write_text("{not json")
    res = runner.invoke(cli, ["evaluate", "--data", str(data), "--work", str(trained_work), "-q"])
    assert res.exit_code == 1 and "labels.json: not valid JSON" in res.output


def test_train_force_starts_over_where_a_partial_state_would_resume(runner, trained_work, tiny_cfg, tmp_path):
    """A killed run's epoch state: a plain run resumes from it, --force throws it away and starts from epoch 1."""
    import shutil
    import threading

    from cuboid_ad.core.config import to_toml
    from cuboid_ad.pipeline.stages.train import fit_region, partial_path

    work = tmp_path / "w"
    shutil.copytree(trained_work / "cuboids", work / "cuboids", copy_function=shutil.copy2)
    cfg = tiny_cfg.with_overrides(train={"epochs": 3, "patience": 3})
    (tmp_path / "c.toml").write_text(to_toml(cfg))
    (work / "models").mkdir()
    stop = threading.Event()
    fit_region(work / "cuboids", work / "models", "r0c0", cfg, report=lambda kind, rid, v: stop.set() if kind == "epoch" else None, stop=stop)
    assert partial_path(work / "models", "r0c0").exists(), "an interrupted run left its first epoch's state"
    args = ["train", "--work", str(work), "--config", str(tmp_path / "c.toml"), "--jobs", "2"]
    forced = runner.invoke(cli, [*args, "--force"])
    assert forced.exit_code == 0 and "resumed after epoch" not in forced.output, forced.output
    assert not partial_path(work / "models", "r0c0").exists()
    stop = threading.Event()  # the same interruption again: now a plain run resumes from it
    (work / "models" / "r0c0.pt").unlink()
    fit_region(work / "cuboids", work / "models", "r0c0", cfg, report=lambda kind, rid, v: stop.set() if kind == "epoch" else None, stop=stop)
    plain = runner.invoke(cli, args)
    assert plain.exit_code == 0 and "r0c0 resumed after epoch 1" in plain.output, plain.output


def test_device_cpu_is_taken_and_cuda_without_a_gpu_is_one_line(runner, trained_work, tiny_data, tmp_path):
    import torch

    clip = str(tiny_data / "test" / "01.mkv")
    ok = runner.invoke(cli, ["score", clip, "--work", str(trained_work), "--out", str(tmp_path / "a"), "--device", "cpu", "-q"])
    assert ok.exit_code == 0, ok.output
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is taken")
    res = runner.invoke(cli, ["score", clip, "--work", str(trained_work), "--out", str(tmp_path / "b"), "--device", "cuda", "-q"])
    assert res.exit_code == 1 and res.output == "error: --device cuda asked for, but torch sees no CUDA GPU\n"
    assert not (tmp_path / "b").exists()


def test_stream_picks_the_files_second_video_stream(runner, trained_work, tiny_data, tmp_path):
    import subprocess

    import numpy as np

    from cuboid_ad.pipeline.media.decode import ffmpeg_exe

    both = tmp_path / "two.mkv"
    normal = next((tiny_data / "train").iterdir())
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(normal), "-i", str(tiny_data / "test" / "01.mkv"), "-map", "0:v", "-map", "1:v",
                    "-c", "copy", str(both)], check=True)  # fmt: skip
    scores = {}
    for stream in (0, 1):
        res = runner.invoke(cli, ["score", str(both), "--work", str(trained_work), "--out", str(tmp_path / f"s{stream}"), "--stream", str(stream), "-q"])
        assert res.exit_code == 0, res.output
        scores[stream] = np.loadtxt(tmp_path / f"s{stream}" / "scores.csv", delimiter=",", skiprows=1, usecols=2)
    alone = runner.invoke(cli, ["score", str(tiny_data / "test" / "01.mkv"), "--work", str(trained_work), "--out", str(tmp_path / "alone"), "-q"])
    assert alone.exit_code == 0
    np.testing.assert_allclose(scores[1], np.loadtxt(tmp_path / "alone" / "scores.csv", delimiter=",", skiprows=1, usecols=2), atol=1e-3)
    assert not np.allclose(scores[0][: len(scores[1])], scores[1][: len(scores[0])], atol=1e-3), "stream 0 is the other clip"
    res = runner.invoke(cli, ["score", str(both), "--work", str(trained_work), "--out", str(tmp_path / "s2"), "--stream", "2"])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "stream" in res.output
