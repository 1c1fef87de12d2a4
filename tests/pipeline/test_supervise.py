"""`supervise` and `classify` on generated clips: the demo's anomaly kinds as classes, labels.json as binary,
fusion into `score`, the report's attention, and clear errors."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import HEIGHT, TINY, WIDTH
from PIL import Image

from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import ArtifactError, InputError
from cuboid_ad.core.workdir import WorkDir
from cuboid_ad.ensemble.fusion import fuse_classifier
from cuboid_ad.ensemble.supervised import read_classifier
from cuboid_ad.pipeline.live.watch import watch
from cuboid_ad.pipeline.media.synthetic import make_classes, render_clip, write_video
from cuboid_ad.pipeline.stages.score import score_video
from cuboid_ad.pipeline.stages.supervise import classify_video, read_attention, supervise
from cuboid_ad.pipeline.stages.train import train_ensemble
from cuboid_ad.pipeline.views.report import report

ROOT = Path(__file__).resolve().parents[2]
SUPERVISE = {"frame_height": 64, "window_frames": 8, "frames_between_windows": 1, "filters": [16, 32, 64], "epochs": 12, "batch_size": 8,
             "learning_rate": 0.001, "patience": 12}  # fmt: skip


@pytest.fixture(scope="session")
def sup_cfg() -> Config:
    return Config.from_dict({**TINY, "supervise": SUPERVISE})


@pytest.fixture(scope="session")
def class_data(tmp_path_factory) -> Path:
    """classes/{normal,fast,place,shape}/ with 3 clips of 40 frames each, at the tiny size."""
    root = tmp_path_factory.mktemp("classes")
    make_classes(root, width=WIDTH, height=HEIGHT, clips_per_class=3, frames_per_clip=40)
    return root


@pytest.fixture(scope="session")
def class_work(tmp_path_factory, class_data, sup_cfg) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("class-work")
    return work, supervise(class_data, work, sup_cfg)


def test_supervise_learns_the_demo_kinds_on_clips_it_never_saw(class_work):
    work, m = class_work
    assert m["classes"] == ["normal", "fast", "place", "shape"]
    assert m["split"] == "validation clips"
    assert len(m["validation_clips"]) == 4 and not set(m["validation_clips"]) & set(m["training_clips"])
    assert {c.split("/")[0] for c in m["validation_clips"]} == {"normal", "fast", "place", "shape"}
    assert m["balanced_accuracy"] >= 0.8, m
    assert m["auc_anomalous"] >= 0.9, m
    files = {p.name for p in (work / "classifier").iterdir()}
    assert files == {"model.pt", "metrics.json", "confusion.png"}, "no partial state or temporary is left"
    assert json.loads((work / "classifier" / "metrics.json").read_text())["confusion"] == m["confusion"]
    assert np.sum(m["confusion"]) == m["n_frames"]
    with Image.open(work / "classifier" / "confusion.png") as im:
        assert im.size[0] > 200


def test_classify_finds_where_and_when_the_odd_one_is(class_work, tmp_path):
    work, _ = class_work
    frames, in_view = render_clip(60, HEIGHT, WIDTH, seed=4242, anomaly="place", anomaly_first=20)
    write_video(frames, tmp_path / "clip.mkv")
    r = classify_video(tmp_path / "clip.mkv", work, tmp_path / "out", heatmaps=2)
    assert r.probabilities.shape == (60, 4) and np.allclose(r.probabilities.sum(1), 1, atol=1e-5)
    p_odd = 1 - r.probabilities[:, 0]
    assert p_odd[in_view].mean() > p_odd[~in_view].mean() + 0.5
    assert (r.predicted[in_view] == r.classes.index("place")).mean() >= 0.6
    with open(tmp_path / "out" / "classes.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 60 and list(rows[0]) == ["frame", "time_s", "class", "p_normal", "p_fast", "p_place", "p_shape"]
    assert [row["class"] for row in rows] == [r.classes[k] for k in r.predicted]
    assert any(c == "place" and a >= 15 for a, b, c, p in r.segments)
    # the attention map points at the disc in the grass, the lower right where nothing else goes
    classes, probs, att = read_attention(tmp_path / "out" / "attention.h5")
    assert classes == r.classes and np.allclose(probs, r.probabilities, atol=1e-6)
    h, w = att.shape[1:]
    seen = np.flatnonzero(in_view)[5:]
    lower_right = att[seen][:, h // 2 :, w // 2 :].mean()
    elsewhere = (att[seen].sum(axis=(1, 2)) - att[seen][:, h // 2 :, w // 2 :].sum(axis=(1, 2))).mean() / (h * w - (h - h // 2) * (w - w // 2))
    assert lower_right > elsewhere
    assert len(list((tmp_path / "out" / "attention").glob("frame_*.png"))) == 2


def test_a_second_run_is_up_to_date_and_a_changed_config_is_refused_for_reuse(class_work, class_data, sup_cfg):
    work, m = class_work
    model = work / "classifier" / "model.pt"
    before = model.stat().st_mtime_ns
    assert supervise(class_data, work, sup_cfg) == m
    assert model.stat().st_mtime_ns == before
    other = sup_cfg.with_overrides(supervise={"window_frames": 6})
    with pytest.raises(ArtifactError, match="supervise.window_frames was 8, now 6"):
        read_classifier(model, other)


@pytest.fixture(scope="module")
def binary_work(tiny_data, sup_cfg, tmp_path_factory) -> tuple[Path, dict]:
    """A binary classifier of tiny_data: its one labelled test clip, and its train clips as normal."""
    work = tmp_path_factory.mktemp("binary")
    return work, supervise(tiny_data, work, sup_cfg.with_overrides(supervise={"epochs": 3}), clips=["01"])


def test_labels_json_gives_a_binary_classifier_with_the_train_clips_as_normal(binary_work, tiny_data, sup_cfg, tmp_path):
    _, m = binary_work
    assert m["classes"] == ["normal", "anomalous"]
    assert set(m["training_clips"]) | set(m["validation_clips"]) == {"01", "train/01", "train/02", "train/03", "train/04"}
    assert "01" in m["training_clips"], "the only clip with incidents stays in training"
    with pytest.raises(InputError, match="no labelled clip"):
        supervise(tiny_data, tmp_path / "other", sup_cfg, clips=["99"])
    assert not (tmp_path / "other").exists()


@pytest.fixture(scope="module")
def fused_work(trained_work, binary_work, sup_cfg, tmp_path_factory) -> Path:
    """The tiny ensemble with the binary classifier beside it, recalibrated with score.classifier_weight = 1."""
    work = tmp_path_factory.mktemp("fused") / "work"
    shutil.copytree(trained_work, work)
    shutil.copytree(binary_work[0] / "classifier", work / "classifier")
    train_ensemble(WorkDir(work).cuboids, WorkDir(work).models, sup_cfg.with_overrides(score={"classifier_weight": 1.0}), n_jobs=2, threads=1)
    return work


def test_score_adds_the_classifiers_vote_when_asked(fused_work, trained_work, tiny_data, tmp_path):
    clip = tiny_data / "test" / "01.mkv"
    plain = score_video(clip, WorkDir(trained_work).models, None, maps=False)
    fused = score_video(clip, WorkDir(fused_work).models, tmp_path / "fused", maps=False)
    c = classify_video(clip, fused_work, None)
    p = 1 - c.probabilities[:, 0]
    assert np.allclose(fused.score, fuse_classifier(plain.score, p, plain.threshold, 1.0), atol=1e-4)
    assert np.array_equal(fused.anomalous, fused.score > fused.threshold)
    with open(tmp_path / "fused" / "scores.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert np.allclose([float(r["p_anomalous"]) for r in rows], p, atol=1e-4)


def test_watch_adds_the_same_vote_as_score(fused_work, tiny_data, tmp_path):
    clip = tiny_data / "test" / "01.mkv"
    scored = score_video(clip, WorkDir(fused_work).models, None, maps=False)
    summary = watch(str(clip), WorkDir(fused_work).models, tmp_path / "live", events_path=tmp_path / "events.jsonl")
    rows = []
    for day in sorted((tmp_path / "live").glob("scores-*.csv")):
        with open(day, newline="", encoding="utf-8") as fh:
            rows += list(csv.DictReader(fh))
    assert summary.frames == len(rows) == scored.n_frames
    # other batch sizes than score's: see test_score's chunk-size test for the tolerance
    np.testing.assert_allclose([float(r["score"]) for r in rows], scored.score, rtol=1e-5, atol=1e-2)
    clear = np.abs(scored.score - scored.threshold) > 1e-2  # flags compared where rounding cannot flip them
    assert clear.mean() > 0.9
    assert np.array_equal(np.array([int(r["anomalous"]) for r in rows])[clear], scored.anomalous.astype(int)[clear])


def test_the_report_shows_where_the_classifier_looked(fused_work, tiny_data, tmp_path):
    made = report(tiny_data / "test" / "01.mkv", WorkDir(fused_work).models, tmp_path, n_gallery=2)
    page = made.html.read_text(encoding="utf-8")
    assert "Supervised classifier (normal, anomalous)" in page
    assert page.count('alt="attention at frame') == 2
    assert (tmp_path / "classes.csv").exists() and (tmp_path / "attention.h5").exists()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "cli.py", *map(str, args), "-q"], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "data" / "classes" / "fights").mkdir(parents=True)
    res = _cli("supervise", "--data", tmp_path / "data", "--work", tmp_path / "work")
    assert res.returncode == 1 and res.stderr.strip().count("\n") == 0 and "needs a normal/ folder" in res.stderr, res.stderr
    (tmp_path / "data" / "classes" / "normal").mkdir()
    res = _cli("supervise", "--data", tmp_path / "data", "--work", tmp_path / "work")
    assert res.returncode == 1 and "normal: holds no clips" in res.stderr, res.stderr
    res = _cli("supervise", "--data", tmp_path / "nothing", "--work", tmp_path / "work")
    assert res.returncode == 1 and "no labelled clips" in res.stderr, res.stderr
    res = _cli("classify", tmp_path / "x.mkv", "--work", tmp_path / "work")
    assert res.returncode == 1 and "no classifier; run `supervise` first" in res.stderr, res.stderr
    assert not (tmp_path / "work" / "classifier").exists()


def test_classify_through_the_cli_prints_what_it_found(class_work, tmp_path):
    from click.testing import CliRunner

    from cuboid_ad.cli import cli

    work, _ = class_work
    frames, _ = render_clip(60, HEIGHT, WIDTH, seed=4242, anomaly="place", anomaly_first=20)
    write_video(frames, tmp_path / "clip.mkv")
    res = CliRunner().invoke(cli, ["classify", str(tmp_path / "clip.mkv"), "--work", str(work), "--out", str(tmp_path / "out"), "-q"])
    assert res.exit_code == 0, res.output
    head, *segments = res.output.strip().splitlines()
    assert head.startswith("clip.mkv: 60 frames classified (normal ") and f"-> {tmp_path / 'out'}" in head
    counts = dict(part.rsplit(" ", 1) for part in head.split("(")[1].split(")")[0].split(", "))
    assert sum(int(v) for v in counts.values()) == 60 and set(counts) == {"normal", "fast", "place", "shape"}
    assert any(s.strip().startswith("place: frames ") and "mean p" in s for s in segments), res.output


def test_supervise_force_trains_again_where_it_was_up_to_date(binary_work, tiny_data, sup_cfg, tmp_path):
    import shutil

    work, m = binary_work
    cfg = sup_cfg.with_overrides(supervise={"epochs": 3})
    copy = tmp_path / "w"
    shutil.copytree(work / "classifier", copy / "classifier", copy_function=shutil.copy2)
    model = copy / "classifier" / "model.pt"
    stamp = model.stat().st_mtime_ns
    assert supervise(tiny_data, copy, cfg, clips=["01"]) == m and model.stat().st_mtime_ns == stamp, "up to date: kept"
    again = supervise(tiny_data, copy, cfg, clips=["01"], force=True)
    assert {k: v for k, v in again.items() if k != "train_seconds"} == {k: v for k, v in m.items() if k != "train_seconds"}, "the same classifier again"
    assert model.stat().st_mtime_ns != stamp, "--force trained it again"
