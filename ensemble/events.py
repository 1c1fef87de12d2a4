"""Flagged frames -> events: what an operator is alerted to.

An event is a stretch of flagged frames in which no quiet gap (time without a
flagged frame) lasts ``gap_seconds`` or more; it counts only once it has lasted
``min_seconds`` (from its first flagged frame to the end of its last). Times are
the frames' own (their timestamps), so a variable frame rate or a recording's
gap is measured as it happened. The rule is applied incrementally, chunk by
chunk, so a file and a live stream give the same events: an event is final once
``gap_seconds`` have passed after it without a flagged frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_EPS = 1e-6  # seconds: times are sums of decimals, 0.6 - 0.4 < 0.2 in floating point


@dataclass(frozen=True)
class Event:
    """An alarm: frames ``first .. last`` (0-based, inclusive) and their times, its peak, and the regions that fired."""

    first: int
    last: int
    start_s: float
    end_s: float  # the time of the last flagged frame
    peak_frame: int
    peak_s: float
    peak_score: float
    regions: tuple[str, ...]  # regions above the threshold during the event, strongest first (a tamper event: its kinds)
    kind: str = "anomaly"  # or "tamper": the camera's view itself is wrong (pipeline.scoring.tamper)

    @property
    def n_frames(self) -> int:
        return self.last - self.first + 1


@dataclass
class _Open:
    first: int
    last: int
    start_s: float
    end_s: float
    peak_frame: int
    peak_s: float
    peak_score: float
    region_peak: np.ndarray  # (R,) strongest score of each region while above threshold (-inf if never)


@dataclass
class EventTracker:
    """Feed per-frame flags, frame scores, region scores and times; collect finished events.

    ``region_ids`` name the columns of the region scores; a region counts as having
    fired when its score exceeds ``threshold``. ``frame_seconds``: how long one frame
    lasts (1 / the frame rate), so that a one-frame event lasts one frame.
    """

    region_ids: list[str]
    threshold: float
    min_seconds: float
    gap_seconds: float
    frame_seconds: float
    kind: str = "anomaly"  # what its events are
    # spans of time (start, end) of a stream's first seconds, while its camera corrections still read it
    # (pipeline.scoring.session.SETTLE_SECONDS): a stretch of flagged frames all inside one is no event
    settling: list[tuple[float, float]] = field(default_factory=list)
    n_seen: int = 0
    current: _Open | None = None
    done: list[Event] = field(default_factory=list)

    def push(self, flags: np.ndarray, score: np.ndarray, region_score: np.ndarray, times: np.ndarray) -> list[Event]:
        """The next frames' flags ``(n,)``, scores ``(n,)``, region scores ``(n, R)`` and times ``(n,)``;
        returns the events now final."""
        before = len(self.done)
        if len(times):
            # a settling span can only hold back a stretch that starts before it ends: those that ended before the
            # open stretch's start and these frames are done with (a watch that reconnects for weeks adds one each time,
            # and counts() runs every frame)
            horizon = float(times[0]) if self.current is None else min(self.current.start_s, float(times[0]))
            self.settling = [(a, b) for a, b in self.settling if b - _EPS > horizon]
        for i in range(len(flags)):
            t, now = self.n_seen + i, float(times[i])
            # quiet time since the last flagged frame: the quiet frames so far (this one too, if quiet),
            # or a recording's gap before this flagged frame
            quiet = now - self.current.end_s - (self.frame_seconds if flags[i] else 0.0) if self.current is not None else 0.0
            if self.current is not None and quiet >= self.gap_seconds - _EPS:
                self._close()
            if flags[i]:
                fired = np.where(region_score[i] > self.threshold, region_score[i], -np.inf)
                if self.current is None:
                    self.current = _Open(t, t, now, now, t, now, float(score[i]), fired.astype(np.float64))
                else:
                    c = self.current
                    c.last, c.end_s = t, now
                    c.region_peak = np.maximum(c.region_peak, fired)
                    if score[i] > c.peak_score:
                        c.peak_frame, c.peak_s, c.peak_score = t, now, float(score[i])
        self.n_seen += len(flags)
        return self.done[before:]

    def finish(self) -> list[Event]:
        """Close the event still open at the end of the stream; returns it if it counts."""
        before = len(self.done)
        if self.current is not None:
            self._close()
        return self.done[before:]

    def counts(self, c: _Open) -> bool:
        """Whether a stretch of flagged frames has lasted ``min_seconds``, and not only inside a stream's settling
        seconds (``settling``): it is an event, whatever follows."""
        settling = any(a - _EPS <= c.start_s and c.end_s < b - _EPS for a, b in self.settling)
        return c.end_s - c.start_s + self.frame_seconds >= self.min_seconds - _EPS and not settling

    def _close(self) -> None:
        c, self.current = self.current, None
        if not self.counts(c):
            return
        order = [i for i in np.argsort(-c.region_peak, kind="stable") if np.isfinite(c.region_peak[i])]
        regions = tuple(self.region_ids[i] for i in order)
        self.done.append(Event(c.first, c.last, c.start_s, c.end_s, c.peak_frame, c.peak_s, c.peak_score, regions, self.kind))


def find_events(flags: np.ndarray, score: np.ndarray, region_score: np.ndarray, times: np.ndarray, region_ids: list[str],
                threshold: float, min_seconds: float, gap_seconds: float, frame_seconds: float) -> list[Event]:
    """The events of a whole clip at once (see :class:`EventTracker`)."""
    tracker = EventTracker(list(region_ids), threshold, min_seconds, gap_seconds, frame_seconds)
    tracker.push(flags, score, region_score, times)
    tracker.finish()
    return tracker.done
