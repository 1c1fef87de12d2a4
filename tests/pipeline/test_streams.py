"""The stream registry: a new per-region stream is one module and one registry line, and every output shows it.

A toy stream (how bright a region's motion input is) is registered here, the tiny
models are recalibrated with it listed in ``score.streams`` at weight 0 (shown,
not scored), and it is looked for in scores.csv, maps.h5, the heatmaps' titles,
the report and the web app's home page.
"""

from __future__ import annotations

import csv
import html
import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from starlette.testclient import TestClient

from cuboid_ad.core.workdir import WorkDir
from cuboid_ad.ensemble import streams
from cuboid_ad.ensemble.streams.base import CausalMean, Fitted, Stream, fit_cell_stats
from cuboid_ad.pipeline.stages.score import score_video
from cuboid_ad.pipeline.stages.train import train_ensemble
from cuboid_ad.pipeline.views import heatmaps
from cuboid_ad.pipeline.views.report import report
from cuboid_ad.pipeline.views.webapp import make_app


class Toy(Stream):
    name = "toy"
    description = "a toy: how far each cell's input lies from mid-grey"
    maps = ("toy",)

    def pixel_maps(self, fwd, reference, cfg):
        return (fwd.x - 0.5).abs().mean(dim=1).cpu()[:, :, None]

    def fit(self, cells, use, cfg, reference):
        peak = [c[:, 0].max(axis=1, keepdims=True) for c in cells]
        stats, _ = fit_cell_stats(peak, [np.zeros_like(p) for p in peak], use, "region", 0.0, cfg.score.smoothing_frames)
        return Fitted(stats)

    def chain(self, stats, cfg):
        smooth = CausalMean(cfg.score.smoothing_frames, prior=stats.prior)

        def step(cells):
            region = stats.z(smooth(cells[..., 0, :].max(axis=-1, keepdims=True)))[..., 0]
            return np.repeat(region[..., None], cells.shape[-1], axis=-1), region

        return step


@pytest.fixture(scope="module")
def with_toy(trained_work, tiny_cfg, tmp_path_factory):
    """A copy of the tiny models recalibrated with the toy stream listed at weight 0."""
    streams.register(Toy())
    work = tmp_path_factory.mktemp("toy") / "w"
    shutil.copytree(trained_work, work)
    cfg = tiny_cfg.with_overrides(score={"streams": {**dict(tiny_cfg.score.streams), "toy": 0.0}})
    train_ensemble(WorkDir(work).cuboids, WorkDir(work).models, cfg, n_jobs=2)
    yield WorkDir(work)
    streams.unregister("toy")


def test_a_registered_stream_is_one_line_and_unknown_names_are_refused(tiny_cfg):
    from cuboid_ad.core.errors import ConfigError

    assert list(streams.STREAMS)[:2] == ["reconstruction", "novelty"]
    with pytest.raises(ConfigError, match="unknown stream"):
        streams.resolve(tiny_cfg.with_overrides(score={"streams": {"nonsense": 1.0}}).score)


def test_a_new_stream_appears_in_every_output_and_weight_zero_changes_no_score(with_toy, trained_work, tiny_data, tmp_path, monkeypatch):
    clip = tiny_data / "test" / "01.mkv"
    plain = score_video(clip, WorkDir(trained_work).models, None)
    result = score_video(clip, with_toy.models, tmp_path / "scored")
    assert result.streams == ["reconstruction", "novelty", "toy"]
    np.testing.assert_array_equal(result.score, plain.score)  # shown, not scored
    assert result.stream_z[..., 2].std() > 0, "the toy stream measured something"

    with open(tmp_path / "scored" / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[-4:] == ["reconstruction_z", "novelty_z", "toy_z", "tamper"]
    np.testing.assert_allclose([float(r["toy_z"]) for r in rows], result.stream_z[..., 2].max(axis=1), atol=1e-4)
    with h5py.File(tmp_path / "scored" / "maps.h5") as fh:
        assert json.loads(fh.attrs["streams"]) == ["reconstruction", "novelty", "toy"] and fh["stream_z"].shape == (80, 6, 3)

    titles = []
    original = heatmaps.frame_figure
    monkeypatch.setattr(heatmaps, "frame_figure", lambda *a: titles.append(a[-1]) or original(*a))
    heatmaps.write_heatmaps(tmp_path / "scored" / "maps.h5", clip, tmp_path / "png", n_frames=2)
    assert len(titles) == 2 and all("toy z" in t and "novelty z" in t for t in titles)

    page = report(clip, with_toy.models, tmp_path / "report").html.read_text()
    assert Toy.description in html.unescape(page) and "highest toy z here" in page and "; toy z " in page

    with TestClient(make_app(with_toy.root)) as client:
        home = client.get("/").text
    assert Toy.description in html.unescape(home) and "<b>toy</b>" in home


def test_the_toy_stream_state_round_trips_through_the_checkpoint(with_toy):
    ck = torch.load(with_toy.models / "r0c0.pt", weights_only=True)
    assert list(ck["streams"]) == ["reconstruction", "novelty", "toy"] and "reference" not in ck["streams"]["toy"]
