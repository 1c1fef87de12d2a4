"""Flagged frames become events: merged across short quiet gaps, dropped when too short, the same in any chunking."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.arrays import runs
from ensemble.events import EventTracker, find_events


def reference_events(flags: np.ndarray, min_frames: int, gap_frames: int) -> list[tuple[int, int]]:
    """The rule written the slow way: runs of flags, merged when fewer than gap_frames quiet frames part them, then filtered."""
    merged: list[list[int]] = []
    for a, b in runs(flags):
        if merged and a - merged[-1][1] < gap_frames:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a, b - 1) for a, b in merged if b - a >= min_frames]


def test_a_known_sequence():
    flags = np.zeros(30, bool)
    flags[[2, 3, 4, 7, 8, 20]] = True
    score = np.arange(30, dtype=float)
    region = np.zeros((30, 3))
    region[3, 1], region[8, 2] = 9.0, 10.0  # region b fires at frame 3, region c more strongly at frame 8
    region[8, 1] = 6.0
    (event,) = find_events(flags, score, region, ["a", "b", "c"], threshold=5.0, min_frames=3, gap_frames=3)
    assert (event.first, event.last, event.n_frames) == (2, 8, 7), "frames 5-6 (2 quiet frames) do not end it; frame 20 alone is too short"
    assert (event.peak_frame, event.peak_score) == (8, 8.0)
    assert event.regions == ("c", "b"), "regions above the threshold during the event, strongest first"
    ended = find_events(flags, score, region, ["a", "b", "c"], threshold=5.0, min_frames=1, gap_frames=2)
    assert [(e.first, e.last) for e in ended] == [(2, 4), (7, 8), (20, 20)], "2 quiet frames end an event when the gap is 2"


@settings(max_examples=150, deadline=None)
@given(
    flags=st.lists(st.booleans(), min_size=1, max_size=80),
    min_frames=st.integers(1, 6),
    gap_frames=st.integers(1, 6),
    cuts=st.lists(st.integers(1, 80), max_size=6),
)
def test_events_follow_the_rule_whatever_the_chunking(flags, min_frames, gap_frames, cuts):
    flags = np.array(flags)
    n = len(flags)
    score = np.random.default_rng(n).random(n)
    region = score[:, None].repeat(2, axis=1)
    tracker = EventTracker(["x", "y"], 0.5, min_frames, gap_frames)
    final = []
    for a, b in zip([0, *sorted(c % n for c in cuts)], [*sorted(c % n for c in cuts), n]):
        final += tracker.push(flags[a:b], score[a:b], region[a:b])
        # an event is released only once gap_frames quiet frames follow it
        assert all(tracker.n_seen - 1 - e.last >= gap_frames for e in final)
    final += tracker.finish()
    assert [(e.first, e.last) for e in final] == reference_events(flags, min_frames, gap_frames)
    for e in final:
        assert e.peak_score == score[e.first : e.last + 1][flags[e.first : e.last + 1]].max()
