"""What a watch keeps on disk: a scores file a local day, and the newest events' files within ``live.keep_events`` and ``live.keep_megabytes``."""

from __future__ import annotations

import collections
import csv
from datetime import datetime
from pathlib import Path
from typing import Any

from cuboid_ad.core.config import LiveConfig
from cuboid_ad.ensemble.ensemble import ScoredFrames
from cuboid_ad.pipeline.scoring.outputs import score_values, stream_columns


class DailyScores:
    """``scores-YYYY-MM-DD.csv`` (local days): one row per scored frame, ``frame_time`` (Unix seconds), ``time`` (ISO 8601 with
    the UTC offset), ``frame`` (1-based, counted over the whole watch), then the columns of a clip's ``scores.csv``."""

    def __init__(self, folder: Path, region_ids: list[str], stream_names: list[str]):
        self.folder = folder
        self.header = ["frame_time", "time", "frame", "score", "anomalous", *region_ids, *stream_columns(stream_names), "tamper"]
        self.day: str | None = None
        self.fh: Any = None
        self.csv: Any = None

    @property
    def today(self) -> Path | None:
        return None if self.day is None else self.folder / f"scores-{self.day}.csv"

    def write(self, index: int, t: float, s: ScoredFrames, i: int) -> None:
        stamp = datetime.fromtimestamp(t).astimezone()  # local time, with its UTC offset
        day = stamp.strftime("%Y-%m-%d")
        if day != self.day:
            self.close()
            self.day = day
            new = not self.today.exists()
            self.fh = open(self.today, "a", newline="", encoding="utf-8")
            self.csv = csv.writer(self.fh)
            if new:
                self.csv.writerow(self.header)
        self.csv.writerow([f"{t:.3f}", stamp.isoformat(timespec="milliseconds"), index + 1, *score_values(s, i)])

    def flush(self) -> None:
        if self.fh:
            self.fh.flush()

    def close(self) -> None:
        if self.fh:
            self.fh.close()
            self.fh = None


def retain(out_path: Path, events_dir: Path, live: LiveConfig, today: Path | None) -> None:
    """Delete the oldest events' files beyond ``live.keep_events``, then the oldest files (events' and past days'
    scores) beyond ``live.keep_megabytes``; today's scores file is counted, never deleted."""
    events: dict[str, list[Path]] = collections.defaultdict(list)
    for p in events_dir.glob("*") if events_dir.exists() else []:
        if not p.name.startswith("."):
            events[p.stem].append(p)
    order = sorted(events, key=lambda k: max(p.stat().st_mtime for p in events[k]))
    if live.keep_events and len(order) > live.keep_events:
        for k in order[: len(order) - live.keep_events]:
            for p in events.pop(k):
                p.unlink(missing_ok=True)
        order = order[len(order) - live.keep_events :]
    if not live.keep_megabytes:
        return
    limit = live.keep_megabytes * 1e6
    days = sorted(p for p in out_path.glob("scores-*.csv") if p != today)
    files = [events[k] for k in order] + [[p] for p in days]
    total = sum(p.stat().st_size for group in files for p in group) + (today.stat().st_size if today is not None and today.exists() else 0)
    files.sort(key=lambda group: min(p.stat().st_mtime for p in group))
    while total > limit and files:
        for p in files.pop(0):
            total -= p.stat().st_size
            p.unlink(missing_ok=True)
