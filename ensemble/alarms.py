"""How often normal footage raises an alarm, in the user's terms: false events per hour, and the threshold that gives them.

An event is a stretch of flagged frames (score above the threshold) whose quiet
gaps are shorter than ``score.event_gap_seconds``, once it lasts
``score.min_event_seconds`` (``ensemble.events``). :func:`events_at` applies that
rule to held-out normal footage at any threshold, so the false event rate is
*counted* wherever that footage shows it: down to one event in its own length
(a minute of footage cannot show one event an hour).

Below that the rate is extrapolated from the tail, as extreme-value theory does
(peaks over a threshold follow a generalised Pareto distribution, Pickands 1975;
SPOT, Siffer et al., KDD 2017, sets streaming thresholds the same way): the
events at a high level ``u`` are found (at least :data:`MIN_PEAKS` of them, ten
when there are), each one's *peak* is the highest threshold at which it would
still be an event, the peaks' excesses over ``u`` are fitted by
probability-weighted moments (Hosking & Wallis 1987), and the rate above any
``t >= u`` is ``rate(u) * (1 + xi (t - u) / sigma) ** (-1 / xi)``.
:class:`AlarmRate` says how far the footage reaches and how far the chosen
threshold lies beyond it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

MIN_PEAKS = 5  # peaks above u the tail is fitted on, at least
SHAPE_BOUNDS = (-0.5, 0.5)  # the fitted shape is kept within these (few peaks make wild fits)
SHAPE_PEAKS = 30  # peaks needed to fit the tail's shape, not only its scale


def events_at(score: np.ndarray, runs: list[int], threshold: float, min_frames: int, gap_frames: int) -> list[tuple[int, int]]:
    """The events of ``score`` at ``threshold``: ``[first, last]`` frame pairs; ``runs``: the lengths of the contiguous
    pieces ``score`` is made of (no event spans two). The rule of ``ensemble.events`` on evenly spaced frames: flagged
    frames join while their quiet gaps are shorter than ``gap_frames``, and count once they span ``min_frames``."""
    out, start = [], 0
    for n in runs:
        flagged = np.flatnonzero(np.asarray(score[start : start + n]) > threshold)
        if len(flagged):
            cuts = np.flatnonzero(np.diff(flagged) - 1 >= gap_frames) + 1
            for part in np.split(flagged, cuts):
                if part[-1] - part[0] + 1 >= min_frames:
                    out.append((start + int(part[0]), start + int(part[-1])))
        start += n
    return out


def event_peak(score: np.ndarray, min_frames: int, gap_frames: int) -> float:
    """The stretch ``score``'s peak: the lowest threshold at which it holds no event (it holds one at any below)."""
    levels = np.unique(score)
    lo, hi = 0, len(levels) - 1  # the first level with no event (the highest has none: nothing is above it)
    while lo < hi:
        mid = (lo + hi) // 2
        if events_at(score, [len(score)], float(levels[mid]), min_frames, gap_frames):
            lo = mid + 1
        else:
            hi = mid
    return float(levels[lo])


def fit_tail(excesses: np.ndarray) -> tuple[float, float]:
    """(shape xi, scale sigma) of a generalised Pareto distribution of ``excesses`` (> 0), by probability-weighted
    moments (Hosking & Wallis 1987), the shape kept within :data:`SHAPE_BOUNDS`. Fewer than :data:`SHAPE_PEAKS`
    excesses cannot tell a shape (fits of ten draw shapes from -0.4 to 0.5): the tail is taken as exponential
    (shape 0, the Gumbel domain of most smoothed scores) and only its scale fitted."""
    y = np.sort(np.asarray(excesses, np.float64))
    n = len(y)
    a0 = y.mean()
    if n < SHAPE_PEAKS:
        return 0.0, float(max(a0, 1e-9))
    a1 = np.mean((1.0 - (np.arange(1, n + 1) - 0.35) / n) * y)
    k = a0 / max(a0 - 2 * a1, 1e-12) - 2.0
    xi = float(np.clip(-k, *SHAPE_BOUNDS))
    # the scale that keeps the mean excess with the bounded shape: E[y] = sigma / (1 - xi)
    return xi, float(max(a0 * (1.0 - xi), 1e-9))


@dataclass(frozen=True)
class AlarmRate:
    """False events per hour of a stream of normal footage, against the threshold; see the module doc."""

    hours: float  # held-out normal footage measured
    peaks: tuple[float, ...]  # the peaks of its events at u, highest first
    u: float  # where the fitted tail starts
    rate_u: float  # events per hour at u
    xi: float
    sigma: float
    runs: tuple[int, ...] = ()  # the footage's contiguous pieces
    min_frames: int = 1
    gap_frames: int = 1
    score: np.ndarray | None = field(default=None, repr=False, compare=False)  # the footage's frame scores (not stored)

    @classmethod
    def fit(cls, score: np.ndarray, runs: list[int], fps: float, min_seconds: float, gap_seconds: float) -> "AlarmRate":
        """From the frame scores of held-out normal footage (``runs``: its contiguous pieces' lengths) at ``fps``."""
        score = np.asarray(score, np.float64)
        min_frames, gap_frames = max(1, int(round(min_seconds * fps))), max(1, int(round(gap_seconds * fps)))
        hours = len(score) / fps / 3600.0
        found: list[tuple[int, int]] = []
        u = float(np.max(score, initial=0.0))
        for q in (0.995, 0.99, 0.98, 0.95, 0.9, 0.8, 0.5):  # the highest level with ten events, else the most
            u = float(np.quantile(score, q)) if len(score) else 0.0
            found = events_at(score, runs, u, min_frames, gap_frames)
            if len(found) >= 2 * MIN_PEAKS:
                break
        peaks = np.sort([event_peak(score[a : b + 1], min_frames, gap_frames) for a, b in found])[::-1]
        if len(peaks) < 2:
            return cls(hours, tuple(float(p) for p in peaks), u, len(peaks) / hours, 0.0, 1e-9, tuple(runs), min_frames, gap_frames, score)
        xi, sigma = fit_tail(np.maximum(peaks - u, 1e-9))
        return cls(hours, tuple(float(p) for p in peaks), u, len(peaks) / hours, xi, sigma, tuple(runs), min_frames, gap_frames, score)

    def rate(self, threshold: float) -> float:
        """Estimated false events per hour at ``threshold``: counted on the footage below ``u``, the fitted tail above."""
        if threshold < self.u and self.score is not None:
            return len(events_at(self.score, list(self.runs), threshold, self.min_frames, self.gap_frames)) / self.hours
        if self.rate_u == 0.0:
            return 0.0
        z = max(threshold - self.u, 0.0) / self.sigma
        if abs(self.xi) < 1e-9:
            return self.rate_u * float(np.exp(-z))
        base = 1.0 + self.xi * z
        return 0.0 if base <= 0 else self.rate_u * float(base ** (-1.0 / self.xi))

    def threshold(self, per_hour: float) -> float:
        """The lowest threshold at which the estimated rate is at most ``per_hour`` false events an hour."""
        if per_hour >= self.rate_u and self.score is not None:  # within the footage: the lowest level that counts few enough
            levels = np.sort(np.unique(self.score))
            lo, hi = 0, len(levels) - 1
            while lo < hi:
                mid = (lo + hi) // 2
                if self.rate(float(levels[mid])) <= per_hour:
                    hi = mid
                else:
                    lo = mid + 1
            return float(levels[lo])
        if self.rate_u == 0.0:
            return self.u
        ratio = max(self.rate_u / per_hour, 1.0)
        if abs(self.xi) < 1e-9:
            return self.u + self.sigma * float(np.log(ratio))
        return self.u + self.sigma / self.xi * float(ratio**self.xi - 1.0)

    @property
    def observed_floor(self) -> float:
        """The lowest rate the footage itself can show: one event in all of it, per hour."""
        return 1.0 / self.hours if self.hours > 0 else float("inf")

    def reach(self, per_hour: float) -> str:
        """One line for train's output and the report: how much footage, how far the estimate is extrapolated."""
        minutes = self.hours * 60
        if per_hour >= self.observed_floor:
            return f"{per_hour:g} false events an hour is within what the {minutes:.1f} minutes of held-out normal footage show"
        return (f"{per_hour:.2g} false events an hour lies {self.observed_floor / per_hour:.0f}x beyond what the {minutes:.1f} minutes of held-out "
                f"normal footage show (one event in {minutes:.1f} min = {self.observed_floor:.0f} an hour): extrapolated from the tail of "
                f"{len(self.peaks)} event peaks")  # fmt: skip

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("score")
        return {**out, "peaks": list(self.peaks), "runs": list(self.runs)}

    @classmethod
    def from_dict(cls, d: dict) -> "AlarmRate":
        return cls(**{**d, "peaks": tuple(d["peaks"]), "runs": tuple(d["runs"])})
