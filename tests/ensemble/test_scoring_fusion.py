import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import InputError
from cuboid_ad.ensemble.fusion import Absorbed, ScoreChain, alarm_threshold, cell_means, region_errors
from cuboid_ad.ensemble.sliding import SlidingWindowScorer, score_tubes
from cuboid_ad.ensemble.streams.base import CausalMean, CellStats, fit_cell_stats, fit_slope


def ones(T):
    def fn(windows):  # (B, T[+1], C, P, P) -> (B, T, 1, P, P)
        return np.ones((len(windows), T, 1) + windows.shape[-2:], np.float32)

    return fn


def covering_windows(n: int, T: int, S: int) -> list[list[int]]:
    """By brute force: the start frames of the windows that score each frame (regular ones,
    else the one window aligned to the clip's end)."""
    regular = list(range(0, n - T + 1, S))
    out = []
    for f in range(n):
        starts = [s for s in regular if s <= f < s + T]
        out.append(starts or [n - T])
    return out


@settings(max_examples=60, deadline=None)
@given(n=st.integers(8, 70), T=st.integers(2, 8), S=st.integers(1, 8), chunk=st.integers(1, 25), prev=st.booleans())
def test_each_frame_gets_the_mean_of_the_windows_covering_it_whatever_the_chunking(n, T, S, chunk, prev):
    S = min(S, T)
    n = max(n, T)
    tubes = np.arange(n, dtype=np.uint8)[None, :, None, None, None] * np.ones((2, 1, 1, 3, 3), np.uint8)

    def fn(windows):
        """A map that tells frames and windows apart: 1000 x the frame + the window's start (+1 in the second map)."""
        frames = (windows[:, 1:, 0] if prev else windows[:, :, 0]).astype(np.float32)  # (B, T, P, P): frame indices
        start = frames[:, :1]
        return np.stack([1000.0 * frames + start, 1000.0 * frames + start + 1], axis=2)  # (B, T, 2, P, P)

    whole = score_tubes([fn, fn], 2, tubes, T, S, prev)
    chunked = score_tubes([fn, fn], 2, tubes, T, S, prev, chunk_frames=chunk)
    assert whole.shape == (n, 2, 2, 3, 3)
    assert np.array_equal(whole, chunked)
    expected = np.array([1000.0 * f + np.mean(starts) for f, starts in enumerate(covering_windows(n, T, S))])
    np.testing.assert_allclose(whole[:, 0, 0, 0, 0], expected, rtol=0, atol=1e-3)
    np.testing.assert_allclose(whole[:, 1, 1, 2, 2], expected + 1, rtol=0, atol=1e-3)


def test_coverage_counts_regular_windows_and_an_end_window_only_where_needed():
    T, S, n = 4, 2, 11  # regular windows 0,2,4,6 cover frames 0..9; frame 10 needs the end window 7..10
    seen = []

    def fn(windows):
        seen.append(windows[:, 0, 0, 0, 0].tolist())
        return np.ones((len(windows), T, 1) + windows.shape[-2:], np.float32)

    tubes = np.arange(n, dtype=np.uint8)[None, :, None, None, None]
    out = score_tubes([fn], 1, tubes, T, S, False, chunk_frames=3)
    assert sorted(sum(seen, [])) == [0, 2, 4, 6, 7]
    assert out.shape == (n, 1, 1, 1, 1)


def test_frames_are_released_with_a_latency_of_at_most_one_window():
    scorer = SlidingWindowScorer([ones(4)], 1, 4, 2)
    tubes = np.zeros((1, 10, 1, 2, 2), np.uint8)
    released = [len(scorer.push(tubes[:, i : i + 1])) for i in range(10)]
    assert sum(released) == 8  # frames 0..7 are final once the window at 6 ran
    assert len(scorer.finish()) == 2


def test_a_clip_shorter_than_a_window_is_refused():
    scorer = SlidingWindowScorer([ones(8)], 1, 8, 4)
    scorer.push(np.zeros((1, 5, 1, 2, 2), np.uint8))
    with pytest.raises(InputError, match="shorter than one window"):
        scorer.finish()


def test_patch_max_finds_a_small_hot_spot_that_the_mean_dilutes():
    px = np.zeros((1, 2, 8, 8), np.float32)
    px[0, 1, 0:2, 6:8] = 1.0
    assert region_errors(px, "mean", 2).tolist() == [[0.0, 4 / 64]]
    assert region_errors(px, "patch_max", 2).tolist() == [[0.0, 1.0]]


def test_causal_mean_is_the_same_in_chunks_and_never_looks_ahead():
    x = np.random.default_rng(0).random((50, 3))
    whole = CausalMean(5)(x)
    sm = CausalMean(5)
    parts = np.concatenate([sm(x[i : i + 7]) for i in range(0, 50, 7)])
    assert np.allclose(whole, parts)
    assert np.allclose(whole[10], x[6:11].mean(axis=0)) and np.allclose(whole[0], x[0])


def test_a_causal_mean_with_a_prior_starts_from_it():
    """The start-of-clip fix: the first frames average with the normal level instead of averaging fewer frames."""
    x = np.array([[6.0], [0.0], [3.0], [9.0]])
    out = CausalMean(3, prior=0.0)(x)
    assert out[:, 0].tolist() == [2.0, 2.0, 3.0, 4.0]
    chunked = CausalMean(3, prior=np.array([1.0]))
    parts = np.concatenate([chunked(x[:1]), chunked(x[1:])])
    assert parts[:, 0].tolist() == pytest.approx([8 / 3, 7 / 3, 3.0, 4.0])


def test_persistence_lets_a_one_frame_glitch_through_as_nothing_and_keeps_what_lasts():
    """score.persistence_frames: a value counts only as long as it lasted (a codec's one-frame refresh of still texture)."""
    glitch = np.array([[0.0], [0.0], [9.0], [0.0], [0.0], [0.0]])
    lasting = np.array([[0.0], [0.0], [9.0], [9.0], [9.0], [0.0]])
    assert CausalMean(3, prior=0.0, persist=1)(glitch).max() == 3.0, "without persistence the glitch is averaged in"
    assert CausalMean(3, prior=0.0, persist=2)(glitch).max() == 0.0
    assert CausalMean(1, prior=0.0, persist=2)(lasting)[:, 0].tolist() == [0.0, 0.0, 0.0, 9.0, 9.0, 0.0], "a frame later"
    x = np.random.default_rng(1).random((40, 2))
    for prior in (None, 0.5):
        whole = CausalMean(4, prior, persist=3)(x)
        chunked = CausalMean(4, prior, persist=3)
        assert np.allclose(np.concatenate([chunked(x[i : i + 3]) for i in range(0, 40, 3)]), whole)
        assert np.allclose(CausalMean(1, prior, persist=3)(x)[10], x[8:11].min(axis=0))


def test_cell_means_split_each_region_row_by_row():
    maps = np.zeros((1, 2, 4, 4), np.float32)
    maps[0, 1, 0:2, 2:4] = 1.0  # region 1, top-right 2x2 cell
    assert cell_means(maps, 2).tolist() == [[[0, 0, 0, 0], [0, 1, 0, 0]]]
    assert region_errors(maps, "patch_max", 2).tolist() == [[0.0, 1.0]]


def test_slope_of_error_on_motion_is_fitted_per_cell_and_kept_below_the_cap():
    rng = np.random.default_rng(1)
    E = rng.random((500, 3))
    e = np.stack([0.3 * E[:, 0] + 0.1, 2.0 * E[:, 1], np.full(500, 0.5)], axis=1) + rng.normal(0, 1e-3, (500, 3))
    em, Em, slope = fit_slope(e, E, explained_max=0.95)
    assert slope[0] == pytest.approx(0.3, abs=0.01)  # a crowd's extra error, explained
    assert slope[1] == 0.95, "never more than the cap: motion the model cannot rebuild at all still counts"
    assert slope[2] == pytest.approx(0.0, abs=0.01)
    assert fit_slope(e, np.zeros_like(E), 0.95)[2].tolist() == [0.0, 0.0, 0.0], "no motion, nothing to explain"
    stats = CellStats(em, Em, slope, np.zeros(3), np.zeros(3), np.ones(3))
    r = stats.residual(e, E)
    assert np.abs(r[:, 0]).max() < 0.01 and abs(r[:, 1].mean()) < 1e-9


def test_region_statistics_measure_every_cell_on_one_scale_cell_statistics_on_its_own():
    """The same error in a cell that never moved and in a busy one: one score with "region",
    a far higher one in the quiet cell with "cell" (what lost on Ped2's test split)."""
    rng = np.random.default_rng(2)
    busy = rng.gamma(2.0, 1.0, 400)  # a walkway cell
    quiet = rng.normal(0.05, 0.01, 400)  # a cell where nothing ever moved
    e = [np.stack([busy, quiet], axis=1)]
    E = [np.zeros((400, 2))]
    use = [np.ones(400, bool)]
    new = np.array([[3.0, 3.0]])  # the same error in both
    for statistics in ("region", "cell"):
        stats, smoothed = fit_cell_stats(e, E, use, statistics, 1.0, smoothing=1)
        z = stats.z(stats.residual(new, np.zeros((1, 2))))[0]
        if statistics == "region":
            assert z[0] == z[1] and stats.z(smoothed[0]).max(axis=1).mean() == pytest.approx(0.0, abs=1e-9)
            assert (stats.offset == 0).all() and (stats.slope == 0).all() and np.allclose(stats.prior, [busy.mean(), quiet.mean()])
        else:
            assert z[1] > 50 * z[0], "a quiet cell's tiny spread makes anything there extreme"
            assert np.allclose(stats.z(smoothed[0]).mean(axis=0), 0.0)


def test_motion_weight_adds_the_motion_energy_the_speed_floor_scores():
    rng = np.random.default_rng(3)
    e, E = [rng.gamma(2.0, 1.0, (300, 2))], [rng.gamma(2.0, 2.0, (300, 2))]
    use = [np.ones(300, bool)]
    plain, _ = fit_cell_stats(e, E, use, "region", 1.0, smoothing=1)
    blended, _ = fit_cell_stats(e, E, use, "region", 1.0, smoothing=1, motion_weight=0.5)
    new_e, new_E = np.array([[1.0, 1.0]]), np.array([[9.0, 1.0]])
    assert np.allclose(plain.residual(new_e, new_E), new_e), "0: the learned error alone"
    assert np.allclose(blended.residual(new_e, new_E), new_e + 0.5 * new_E)
    far, _ = fit_cell_stats(e, E, use, "region", 1.0, smoothing=1, motion_weight=100.0)
    speed, _ = fit_cell_stats(E, E, use, "region", 1.0, smoothing=1)  # the floor: the error is the energy
    assert np.allclose(far.z(far.residual(new_e, new_E)), speed.z(speed.residual(new_E, new_E)), rtol=0.02)


def test_the_alarm_threshold_lets_through_at_most_the_asked_share():
    normal = np.arange(1000, dtype=float)
    t = alarm_threshold(normal, 0.01)
    assert t in normal and np.mean(normal > t) <= 0.01 and np.mean(normal >= t) <= 0.01 + 1 / len(normal)
    assert alarm_threshold(np.arange(50.0), 0.001) == 49.0, "fewer frames than 1/rate: the highest one"


class Moving:
    """A stream with a ``reach`` map (the gate reads it) whose chain gives every cell and the region z = 8."""

    name, maps = "moving", ("error", "reach")

    def chain(self, stats, cfg):
        return lambda cells: (np.full(cells.shape[:-2] + cells.shape[-1:], 8.0), np.full(cells.shape[:-2], 8.0))


def test_an_absorbed_stretch_divides_z_only_while_the_region_moves_as_much_and_the_frames_its_smoothing_reaches():
    cfg = Config()  # smoothing 5 frames, persistence 2: a frame's z is reached by it and the 5 before it
    window = cfg.score.smoothing_frames + cfg.score.persistence_frames - 1
    assert window == 6
    energy = np.zeros(14)
    energy[2], energy[11] = 9.0, 3.9  # one cell moves as much as the stretch did (bar 4) at frame 2; less at 11
    cells = np.zeros((14, 3, 2))  # (n, maps: the shown reconstruction, then the stream's, K = 2 cells)
    cells[:, 2, 1] = energy
    gated = np.zeros(14, bool)
    gated[2 : 2 + window] = True
    for chunks in ([14], [3, 1, 6, 4]):
        chain, out = ScoreChain([(Moving(), 1.0)], [None], cfg, Absorbed(bar=4.0, factor=10.0)), []
        for part in np.split(cells, np.cumsum(chunks)[:-1]):
            out.append(chain(part))
        cell_z, region, streams = (np.concatenate(x) for x in zip(*out))
        assert region.tolist() == np.where(gated, 0.8, 8.0).tolist(), chunks
        assert (cell_z == region[:, None]).all() and (streams[:, 0] == region).all(), "cells and streams alike"
    nothing = ScoreChain([(Moving(), 1.0)], [None], cfg)(cells)[1]
    assert (nothing == 8.0).all(), "nothing absorbed: nothing divided"


class Peaked:
    """A stream whose cells' z are its ``error`` map and whose region z is their largest plus 1 (a peak smoothed
    above its cells', as the novelty's can be)."""

    name, maps = "peaked", ("error", "reach")

    def chain(self, stats, cfg):
        return lambda cells: (cells[..., 0, :].copy(), cells[..., 0, :].max(axis=-1) + 1.0)


def test_absorbed_cells_are_divided_only_while_each_moves_as_much_and_the_region_falls_as_its_top_cell_did():
    cfg = Config()
    window = cfg.score.smoothing_frames + cfg.score.persistence_frames - 1
    cells = np.zeros((14, 3, 3))  # (n, maps: the shown reconstruction, error, reach; K = 3 cells)
    cells[:, 1] = [5.0, 8.0, 2.0]  # cell 1 carries the region
    cells[2, 2, 1] = 9.0  # the absorbed cell moves as much as the stretch did (bar 4) at frame 2 ...
    cells[11, 2, 1] = 3.9  # ... and less at 11
    cells[5, 2, 0] = cells[5, 2, 2] = 50.0  # cells not absorbed move fast at 5: nothing changes there
    open_ = np.zeros(14, bool)
    open_[2 : 2 + window] = True
    for chunks in ([14], [3, 1, 6, 4]):
        chain, out = ScoreChain([(Peaked(), 1.0)], [None], cfg, Absorbed(bar=4.0, factor=10.0, cells=(1,))), []
        for part in np.split(cells, np.cumsum(chunks)[:-1]):
            out.append(chain(part))
        cell_z, region, streams = (np.concatenate(x) for x in zip(*out))
        assert cell_z[:, 1].tolist() == np.where(open_, 0.8, 8.0).tolist(), chunks
        assert (cell_z[:, [0, 2]] == [5.0, 2.0]).all(), "the other cells score in full"
        assert region.tolist() == np.where(open_, 9.0 * 5.0 / 8.0, 9.0).tolist(), "the region falls as its top cell did"
        assert (streams[:, 0] == region).all()
    low = cells.copy()
    low[:, 1, 0] = 9.0  # a cell that is not absorbed is the top: the region keeps its z
    assert (ScoreChain([(Peaked(), 1.0)], [None], cfg, Absorbed(4.0, 10.0, (1,)))(low)[1] == 10.0).all()


def test_absorbed_regions_scored_together_each_keep_their_own_bar_and_factor():
    cfg = Config()
    cells = np.zeros((3, 2, 3, 1))  # (n, R = 2, maps, K = 1)
    cells[:, :, 2, 0] = 5.0
    region = ScoreChain([(Moving(), 1.0)], [None], cfg, [Absorbed(4.0, 2.0), Absorbed(6.0, 4.0)])(cells)[1]
    assert region.tolist() == [[4.0, 8.0]] * 3, "5 reaches the first region's bar, not the second's"
    cells = np.zeros((3, 2, 3, 2))  # (n, R = 2, maps, K = 2)
    cells[:, :, 1] = [3.0, 7.0]
    cells[:, :, 2] = 5.0
    chain = ScoreChain([(Peaked(), 1.0)], [None], cfg, [Absorbed(4.0, 2.0, (1,)), Absorbed(4.0, 7.0, (0,))])
    cell_z, region, _ = chain(cells)
    assert cell_z.tolist() == [[[3.0, 3.5], [3.0 / 7.0, 7.0]]] * 3 and region.tolist() == [[4.0, 8.0]] * 3, "each region its own cells"
