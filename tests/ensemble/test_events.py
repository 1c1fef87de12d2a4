"""Flagged frames become events: merged across short quiet gaps, dropped when too short, the same in any
chunking, measured on the frames' own times."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cuboid_ad.core.arrays import runs
from cuboid_ad.ensemble.events import EventTracker, find_events


def reference_events(flags: np.ndarray, min_frames: int, gap_frames: int) -> list[tuple[int, int]]:
    """The rule written the slow way, at a steady frame rate: runs of flags, merged when fewer than
    gap_frames quiet frames part them, then those shorter than min_frames dropped."""
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
    times = np.arange(30) / 10.0  # 10 frames a second
    (event,) = find_events(flags, score, region, times, ["a", "b", "c"], 5.0, min_seconds=0.3, gap_seconds=0.3, frame_seconds=0.1)
    assert (event.first, event.last, event.n_frames) == (2, 8, 7), "frames 5-6 (0.2 s quiet) do not end it; frame 20 alone is too short"
    assert (event.start_s, event.end_s, event.peak_frame, event.peak_s, event.peak_score) == (0.2, 0.8, 8, 0.8, 8.0)
    assert event.regions == ("c", "b"), "regions above the threshold during the event, strongest first"
    ended = find_events(flags, score, region, times, ["a", "b", "c"], 5.0, min_seconds=0.1, gap_seconds=0.2, frame_seconds=0.1)
    assert [(e.first, e.last) for e in ended] == [(2, 4), (7, 8), (20, 20)], "0.2 s without a flag ends an event when the gap is 0.2 s"


def test_the_rule_runs_on_the_frames_times_not_their_count():
    """A recording's gap (frames 0-4, then 60 s later frames 5-9, all flagged) splits an event in two;
    frames bunched at a high rate take longer to make an event's minimum length."""
    flags = np.ones(10, bool)
    times = np.r_[np.arange(5) * 0.1, 60.0 + np.arange(5) * 0.1]
    found = find_events(flags, np.ones(10), np.ones((10, 1)), times, ["r0c0"], 0.5, min_seconds=0.3, gap_seconds=1.0, frame_seconds=0.1)
    assert [(e.first, e.last, e.start_s, e.end_s) for e in found] == [(0, 4, 0.0, 0.4), (5, 9, 60.0, 60.4)]
    fast = np.arange(10) * 0.01  # 100 frames a second: ten frames last 0.1 s, shorter than the minimum
    assert find_events(flags, np.ones(10), np.ones((10, 1)), fast, ["r0c0"], 0.5, min_seconds=0.3, gap_seconds=1.0, frame_seconds=0.01) == []


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
    times = np.arange(n) / 10.0
    tracker = EventTracker(["x", "y"], 0.5, min_frames / 10.0, gap_frames / 10.0, 0.1)
    final = []
    for a, b in zip([0, *sorted(c % n for c in cuts)], [*sorted(c % n for c in cuts), n]):
        final += tracker.push(flags[a:b], score[a:b], region[a:b], times[a:b])
        # an event is released only once gap_frames quiet frames follow it
        assert all(tracker.n_seen - 1 - e.last >= gap_frames for e in final)
    final += tracker.finish()
    assert [(e.first, e.last) for e in final] == reference_events(flags, min_frames, gap_frames)
    for e in final:
        assert e.peak_score == score[e.first : e.last + 1][flags[e.first : e.last + 1]].max()


def test_flagged_frames_only_inside_a_stream_s_settling_seconds_raise_no_event():
    """A stream's first seconds (``settling``: while the camera corrections still read it) hold an event back: a
    stretch all inside them raises none, and is not announced while it lasts; one that goes on past them is one event
    from its first frame. A second stream's span (a reconnect) holds its own start, not an event from before it."""
    times = np.arange(80) / 10.0
    score, region = np.ones(80), np.ones((80, 1))

    def events(flagged: list[int], settling: list[tuple[float, float]]) -> list[tuple[int, int]]:
        flags = np.isin(np.arange(80), flagged)
        tracker = EventTracker(["r0c0"], 0.5, 0.5, 1.0, 0.1, settling=list(settling))
        found = tracker.push(flags, score, region, times) + tracker.finish()
        return [(e.first, e.last) for e in found]

    start = [(0.0, 2.0)]
    assert events(list(range(2, 14)), []) == [(2, 13)], "without a settling span the flood is an event"
    assert events(list(range(2, 14)), start) == [], "a flood inside the first 2 s is no event"
    assert events(list(range(2, 14)) + list(range(15, 25)), start) == [(2, 24)], "one going on past them is one event from its start"
    assert events(list(range(30, 40)), start) == [(30, 39)], "later frames are not held"
    assert events(list(range(30, 40)) + list(range(52, 58)), [(0.0, 2.0), (5.0, 7.0)]) == [(30, 39)], "a reconnect at 5 s holds its own start"
    tracker = EventTracker(["r0c0"], 0.5, 0.5, 1.0, 0.1, settling=start)
    tracker.push(np.ones(15, bool), score[:15], region[:15], times[:15])
    assert not tracker.counts(tracker.current), "not announced while it may still end inside the span"
    tracker.push(np.ones(10, bool), score[15:25], region[15:25], times[15:25])
    assert tracker.counts(tracker.current), "announced once it goes on past the span"
    tracker.push(np.zeros(55, bool), score[25:], region[25:], times[25:])
    assert tracker.settling == [(0.0, 2.0)], "kept while the stretch that started inside it is open"
    tracker.push(np.zeros(1, bool), score[:1], region[:1], np.array([8.0]))
    assert tracker.settling == [], "a span is let go once no stretch can start inside it (a long watch reconnects often)"
