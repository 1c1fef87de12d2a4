"""Flagged frames -> events: what an operator is alerted to.

An event is a stretch of flagged frames in which no quiet gap (a run of
unflagged frames) lasts ``gap_frames`` or more; it counts only once it has
lasted ``min_frames`` (first to last flagged frame). The rule is applied
incrementally, frame chunk by frame chunk, so a file and a live stream give
the same events: an event is final once ``gap_frames`` quiet frames follow it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Event:
    """An alarm: frames ``first .. last`` (0-based, inclusive), its peak, and the regions that fired."""

    first: int
    last: int
    peak_frame: int
    peak_score: float
    regions: tuple[str, ...]  # regions above their threshold during the event, strongest first

    @property
    def n_frames(self) -> int:
        return self.last - self.first + 1


@dataclass
class _Open:
    first: int
    last: int
    peak_frame: int
    peak_score: float
    region_peak: np.ndarray  # (R,) strongest score of each region while above threshold (-inf if never)


@dataclass
class EventTracker:
    """Feed per-frame flags, frame scores and region scores; collect finished events.

    ``region_ids`` name the columns of the region scores; a region counts as having
    fired when its score exceeds ``threshold``.
    """

    region_ids: list[str]
    threshold: float
    min_frames: int
    gap_frames: int
    n_seen: int = 0
    current: _Open | None = None
    done: list[Event] = field(default_factory=list)

    def push(self, flags: np.ndarray, score: np.ndarray, region_score: np.ndarray) -> list[Event]:
        """The next frames' flags ``(n,)``, scores ``(n,)`` and region scores ``(n, R)``; returns the events now final."""
        before = len(self.done)
        for i in range(len(flags)):
            t = self.n_seen + i
            if self.current is not None and not flags[i] and t - self.current.last >= self.gap_frames:
                self._close()  # frames last+1 .. t are quiet: gap_frames of them
            if flags[i]:
                fired = np.where(region_score[i] > self.threshold, region_score[i], -np.inf)
                if self.current is None:
                    self.current = _Open(t, t, t, float(score[i]), fired.astype(np.float64))
                else:
                    c = self.current
                    c.last = t
                    c.region_peak = np.maximum(c.region_peak, fired)
                    if score[i] > c.peak_score:
                        c.peak_frame, c.peak_score = t, float(score[i])
        self.n_seen += len(flags)
        if self.current is not None and self.n_seen - 1 - self.current.last >= self.gap_frames:
            self._close()
        return self.done[before:]

    def finish(self) -> list[Event]:
        """Close the event still open at the end of the stream; returns it if it counts."""
        before = len(self.done)
        if self.current is not None:
            self._close()
        return self.done[before:]

    def _close(self) -> None:
        c, self.current = self.current, None
        if c.last - c.first + 1 < self.min_frames:
            return
        order = [i for i in np.argsort(-c.region_peak, kind="stable") if np.isfinite(c.region_peak[i])]
        self.done.append(Event(c.first, c.last, c.peak_frame, c.peak_score, tuple(self.region_ids[i] for i in order)))


def find_events(flags: np.ndarray, score: np.ndarray, region_score: np.ndarray, region_ids: list[str], threshold: float,
                min_frames: int, gap_frames: int) -> list[Event]:
    """The events of a whole clip at once (see :class:`EventTracker`)."""
    tracker = EventTracker(list(region_ids), threshold, min_frames, gap_frames)
    tracker.push(flags, score, region_score)
    tracker.finish()
    return tracker.done
