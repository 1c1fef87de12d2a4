"""What a watch keeps on disk (pipeline.live.retention): a scores file per local day, switched at local
midnight with the clock given by each frame's own time, and the oldest files deleted beyond keep_megabytes."""

from __future__ import annotations

import csv
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from cuboid_ad.core.config import LiveConfig
from cuboid_ad.ensemble.ensemble import ScoredFrames
from cuboid_ad.pipeline.live.retention import DailyScores, retain


@pytest.fixture
def paris(monkeypatch):
    """Local time is Paris (UTC+1 in winter), so that a local day and a UTC day differ."""
    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _frames(n: int) -> ScoredFrames:
    r, k = 2, 1
    return ScoredFrames(0, np.zeros((n, r, k)), np.arange(n * r, dtype=float).reshape(n, r), np.arange(n, dtype=float), np.zeros(n, bool),
                        np.zeros((n, r, 4, 4)), stream_z=np.zeros((n, r, k)), tamper=np.array([""] * n, dtype=object))  # fmt: skip


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_scores_file_switches_at_local_midnight_and_a_restart_appends(paris, tmp_path):
    midnight = datetime(2026, 12, 5).astimezone().timestamp()  # local midnight, 23:00 UTC
    times = [midnight - 1.5, midnight - 0.5, midnight + 0.5]
    s = _frames(3)
    daily = DailyScores(tmp_path, ["r0c0", "r0c1"], ["reconstruction"])
    for i, t in enumerate(times):
        daily.write(i, t, s, i)
    daily.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores-2026-12-04.csv", "scores-2026-12-05.csv"]
    before, after = _rows(tmp_path / "scores-2026-12-04.csv"), _rows(tmp_path / "scores-2026-12-05.csv")
    assert [r["frame"] for r in before + after] == ["1", "2", "3"], "frames are counted over the whole watch"
    assert before[-1]["time"] == "2026-12-04T23:59:59.500+01:00" and after[0]["time"] == "2026-12-05T00:00:00.500+01:00"
    again = DailyScores(tmp_path, ["r0c0", "r0c1"], ["reconstruction"])  # a watch started again the same day
    again.write(3, midnight + 60, s, 2)
    again.close()
    lines = (tmp_path / "scores-2026-12-05.csv").read_text().splitlines()
    assert len(lines) == 3 and lines.count(lines[0]) == 1, "appended under the one header"


def _file(path: Path, megabytes: float, age_s: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * int(megabytes * 1e6))
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def test_keep_megabytes_deletes_the_oldest_files_never_todays_scores(tmp_path):
    events = tmp_path / "events"
    old_event = [_file(events / "e1.jpg", 0.1, 500), _file(events / "e1.mp4", 0.2, 500)]
    new_event = [_file(events / "e2.jpg", 0.1, 100), _file(events / "e2.mp4", 0.2, 100)]
    old_day = _file(tmp_path / "scores-2026-12-01.csv", 0.3, 300)
    today = _file(tmp_path / "scores-2026-12-05.csv", 0.4, 0)
    retain(tmp_path, events, LiveConfig(keep_events=0, keep_megabytes=1.0), today)  # 1.3 MB: the oldest 0.3 MB go
    assert not any(p.exists() for p in old_event) and all(p.exists() for p in new_event + [old_day, today])
    retain(tmp_path, events, LiveConfig(keep_events=0, keep_megabytes=0.5), today)  # 1.0 MB: the day's file, then the event
    assert not old_day.exists() and not any(p.exists() for p in new_event) and today.exists()
    retain(tmp_path, events, LiveConfig(keep_events=0, keep_megabytes=0.1), today)  # today's file alone is over: it stays
    assert today.exists()


def test_keep_events_counts_an_events_files_as_one(tmp_path):
    events = tmp_path / "events"
    for k, age in enumerate([400, 300, 200, 100]):
        _file(events / f"e{k}.jpg", 0.001, age)
        _file(events / f"e{k}.mp4", 0.001, age)
    _file(events / ".e9.mp4.tmp", 0.001, 999)  # being written: not an event
    retain(tmp_path, events, LiveConfig(keep_events=2, keep_megabytes=0), None)
    assert sorted(p.name for p in events.iterdir()) == [".e9.mp4.tmp", "e2.jpg", "e2.mp4", "e3.jpg", "e3.mp4"]


def test_a_day_is_the_local_one_not_utc(paris, tmp_path):
    """23:30 UTC on the 4th is 00:30 on the 5th in Paris."""
    t = (datetime(2026, 12, 4, 23, 30) - datetime(1970, 1, 1)) / timedelta(seconds=1)
    daily = DailyScores(tmp_path, ["r0c0", "r0c1"], ["reconstruction"])
    daily.write(0, t, _frames(1), 0)
    daily.close()
    assert [p.name for p in tmp_path.iterdir()] == ["scores-2026-12-05.csv"]
