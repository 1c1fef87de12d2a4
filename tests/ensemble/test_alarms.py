"""False events an hour: counted where the footage shows them, extrapolated from the tail of its event peaks beyond."""

from __future__ import annotations

import numpy as np
import pytest

from cuboid_ad.ensemble.alarms import AlarmRate, event_peak, events_at, fit_tail
from cuboid_ad.ensemble.events import find_events

FPS = 10.0


def normal_scores(hours: float, seed: int) -> np.ndarray:
    """A normal camera's frame scores: Gaussian noise smoothed over 5 frames (as the chain smooths), with heavy-ish
    tails (a Student t with 5 degrees of freedom)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_t(5, int(hours * 3600 * FPS))
    return np.convolve(x, np.ones(5) / 5, mode="same")


def events_per_hour(score: np.ndarray, threshold: float) -> float:
    found = find_events(score > threshold, score, score[:, None], np.arange(len(score)) / FPS, ["r"], threshold, 0.5, 1.0, 1 / FPS)
    return len(found) / (len(score) / FPS / 3600)


def test_events_at_follow_the_event_rule_and_never_join_two_runs():
    rng = np.random.default_rng(4)
    score = np.convolve(rng.normal(size=3000), np.ones(5) / 5, mode="same")
    for t in (0.3, 0.6, 0.9):
        mine = events_at(score, [len(score)], t, 5, 10)
        rule = find_events(score > t, score, score[:, None], np.arange(len(score)) / FPS, ["r"], t, 0.5, 1.0, 1 / FPS)
        assert [(e.first, e.last) for e in rule] == mine
    two = np.zeros(40)
    two[15:25] = 3.0
    assert len(events_at(two, [40], 1.0, 5, 10)) == 1 and len(events_at(two, [20, 20], 1.0, 5, 10)) == 2


def test_an_events_peak_is_the_highest_threshold_it_survives():
    stretch = np.array([1.0, 4.0, 4.0, 3.0, 5.0, 4.0, 2.0])
    p = event_peak(stretch, 5, 10)
    assert p == 4.0 and events_at(stretch, [7], p - 1e-9, 5, 10) and not events_at(stretch, [7], p, 5, 10)


def test_the_tail_fit_recovers_a_known_shape():
    rng = np.random.default_rng(0)
    for xi in (-0.2, 0.0, 0.3):
        u = rng.random(4000)
        y = (u ** -xi - 1) / xi if xi else -np.log(u)  # generalised Pareto, scale 1
        got, scale = fit_tail(y)
        assert abs(got - xi) < 0.1 and abs(scale - 1) < 0.15
        assert fit_tail(y[:20])[0] == 0.0, "twenty peaks tell a scale, not a shape"


def test_a_rate_far_beyond_the_footage_is_extrapolated_to_the_right_order():
    long = normal_scores(30, seed=2)  # 30 hours to check against
    ratios = {4.0: [], 1.0: [], 0.3: []}
    for seed in range(10, 16):  # six cameras' hour of held-out footage each
        short = normal_scores(1.0, seed=seed)
        rate = AlarmRate.fit(short, [len(short)], FPS, 0.5, 1.0)
        for per_hour in ratios:
            t = rate.threshold(per_hour)
            assert rate.rate(t) <= per_hour * 1.0001
            ratios[per_hour].append(events_per_hour(long, t) / per_hour)
    for per_hour, r in ratios.items():
        assert 1 / 3 <= np.median(r) <= 3, f"{per_hour}/h: true / asked over six fits {np.round(r, 2)}"
    assert "3x beyond what the 60.0 minutes" in rate.reach(0.3)


def test_the_rate_is_counted_where_the_footage_shows_it():
    score = normal_scores(1.0, seed=3)
    rate = AlarmRate.fit(score, [len(score)], FPS, 0.5, 1.0)
    t = np.quantile(score, 0.99)
    assert rate.rate(t) == pytest.approx(events_per_hour(score, t), rel=0.35)
    again = AlarmRate.from_dict(rate.to_dict())
    assert again.rate(t + 1.0) == rate.rate(t + 1.0) and again.threshold(0.5) == rate.threshold(0.5)
