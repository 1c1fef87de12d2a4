"""An event's life in messages, as Frigate's MQTT events have it: ``new``, ``update``, ``end``.

An anomaly event (``"kind": "anomaly"``): ``new`` once it has lasted
``score.min_event_seconds`` (its clip starts then, from ``live.clip_before_seconds``
before it); ``update`` when it enters another region or reaches a higher score, at
most once a second; ``end`` with a snapshot PNG of its peak frame (the anomaly map
over it) and its clip. Every message names the camera, the regions above the
threshold, and the frames dropped so far.

A tamper event (``"kind": "tamper"``, ``"tamper"``: covered, blurred, moved or
shaking; ``pipeline.scoring.tamper``): ``new`` once the condition has lasted its
second, ``end`` when the view is back, with a snapshot of the view as it was.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from cuboid_ad.ensemble.ensemble import Ensemble, ScoredFrames
from cuboid_ad.ensemble.events import Event, EventTracker
from cuboid_ad.pipeline.live.recorder import ClipRecorder
from cuboid_ad.pipeline.pictures.figures import frame_figure, save_figure


@dataclass
class Announced:
    """An event the sinks were told about."""

    id: str
    start_time: float
    entered: set[str] = field(default_factory=set)
    top_score: float = -math.inf
    last_update: float = 0.0
    peak_frame: int = -1
    snapshot: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None  # picture, map, region scores, time
    snapshot_score: float = -math.inf
    announced_at: int = 0  # the frame (the tracker's count) the event was announced at


class EventLifecycle:
    """Follows the event tracker frame by frame and sends each event's messages to ``send``."""

    def __init__(self, camera: str, ens: Ensemble, send: Callable[[dict[str, Any]], None], recorder: ClipRecorder, dropped: Callable[[], int]):
        self.camera, self.send, self.recorder, self.dropped = camera, send, recorder, dropped
        self.region_ids, self.threshold = ens.region_ids, ens.threshold_
        self.boxes = np.array([[r.top, r.left, r.height, r.width] for r in ens.regions])
        self.announced: Announced | None = None
        self.n_events = 0

    def step(self, tracker: EventTracker, scored: ScoredFrames, i: int, frame: np.ndarray, t: float, fps: float, amap: Callable[[], np.ndarray]) -> None:
        """Frame ``i`` of ``scored`` (the tracker's latest, its picture ``frame`` at time ``t``) has been tracked:
        announce, update, keep its snapshot if it is the peak, record it in the clip. ``amap()``: its anomaly map."""
        cur, index = tracker.current, tracker.n_seen - 1
        if cur is None:
            if self.announced is not None:
                self.recorder.write(frame)  # the quiet time after the event, until it ends
            return
        if self.announced is None and tracker.counts(cur):
            self._new(cur, scored.region_z[i], t, fps)
            self.announced.announced_at = index
        a = self.announced
        if a is None:
            return
        # the peak frame's picture; while the peak came before the event was announced (its picture is not kept),
        # the strongest frame since then: an end always has a snapshot
        take = a.peak_frame != index if cur.peak_frame == index else cur.peak_frame < a.announced_at and scored.score[i] > a.snapshot_score
        if take:
            a.peak_frame, a.snapshot, a.snapshot_score = index, (frame, amap(), scored.region_z[i].copy(), t), float(scored.score[i])
        self._maybe_update(cur, scored, i, t)
        self.recorder.write(frame)

    def _message(self, kind: str, a: Announced, frame_time: float, score: float, regions: list[str], end_time: float | None) -> dict[str, Any]:
        return {
            "type": kind, "kind": "anomaly", "id": a.id, "camera": self.camera, "start_time": round(a.start_time, 3),
            "end_time": None if end_time is None else round(end_time, 3), "frame_time": round(frame_time, 3),
            "score": round(float(score), 3), "top_score": round(float(a.top_score), 3), "threshold": round(self.threshold, 3),
            "regions": regions, "entered_regions": sorted(a.entered), "dropped_frames": self.dropped(),
        }  # fmt: skip

    def _regions_now(self, region_z: np.ndarray) -> list[str]:
        return [rid for rid, z in zip(self.region_ids, region_z) if z > self.threshold]

    def _entered(self, cur) -> set[str]:
        return {self.region_ids[k] for k in np.flatnonzero(np.isfinite(cur.region_peak))}

    def _new(self, cur, region_z: np.ndarray, t: float, fps: float) -> None:
        a = Announced(id=f"{cur.start_s:.6f}-{secrets.token_hex(3)}", start_time=cur.start_s, entered=self._entered(cur), top_score=cur.peak_score)
        self.announced = a
        self.recorder.start(a.id, cur.start_s, cur.end_s, fps)  # from clip_before_seconds before the event, up to this frame
        self.send(self._message("new", a, t, float(region_z.max()), self._regions_now(region_z), None))
        a.last_update = time.monotonic()

    def _maybe_update(self, cur, scored: ScoredFrames, i: int, t: float) -> None:
        a = self.announced
        entered = self._entered(cur)
        higher = cur.peak_score > a.top_score
        wider = not entered <= a.entered
        a.entered |= entered
        a.top_score = max(a.top_score, cur.peak_score)
        if (higher or wider) and time.monotonic() - a.last_update >= 1.0:
            self.send(self._message("update", a, t, scored.score[i], self._regions_now(scored.region_z[i]), None))
            a.last_update = time.monotonic()

    def end(self, e: Event, events_dir: Path) -> bool:
        """The tracker closed ``e``: its ``end`` message with the snapshot and the clip. False when it was never announced."""
        a, self.announced = self.announced, None
        if a is None:
            return False
        clip = self.recorder.close()
        snapshot = None
        if a.snapshot is not None:
            picture, amap, rz, t = a.snapshot
            title = f"{self.camera}  {datetime.fromtimestamp(t):%Y-%m-%d %H:%M:%S}  peak score {float(rz.max()):.2f}"
            figure = frame_figure(picture, amap, self.boxes, self.region_ids, rz, self.threshold, title)
            snapshot = save_figure(figure, events_dir / f"{a.id}.png")
        a.entered |= set(e.regions)
        a.top_score = max(a.top_score, e.peak_score)
        msg = self._message("end", a, e.end_s, e.peak_score, [], e.end_s)
        msg.update(peak_time=round(e.peak_s, 3), snapshot=str(snapshot) if snapshot else None, clip=str(clip) if clip else None)
        self.send(msg)
        self.n_events += 1
        return True

    def discard(self) -> None:
        """The stream ended inside a stretch too short to count after all: nothing to end."""
        self.announced = None
        self.recorder.abort()


class TamperLifecycle:
    """Follows the tamper tracker and sends a tamper event's ``new`` and ``end``."""

    def __init__(self, camera: str, send: Callable[[dict[str, Any]], None], dropped: Callable[[], int]):
        self.camera, self.send, self.dropped = camera, send, dropped
        self.announced: dict[str, Any] | None = None  # the new message sent
        self.picture: np.ndarray | None = None
        self.n_events = 0

    def step(self, tracker: EventTracker, frame: np.ndarray, t: float, condition: str) -> None:
        cur = tracker.current
        if cur is None or self.announced is not None or not tracker.counts(cur):
            return
        self.announced = {"type": "new", "kind": "tamper", "tamper": condition or "covered", "id": f"{cur.start_s:.6f}-{secrets.token_hex(3)}",
                          "camera": self.camera, "start_time": round(cur.start_s, 3), "end_time": None, "frame_time": round(t, 3),
                          "dropped_frames": self.dropped()}  # fmt: skip
        self.picture = frame
        self.send(dict(self.announced))

    def end(self, e: Event, events_dir: Path) -> bool:
        a, self.announced = self.announced, None
        if a is None:
            return False
        snapshot = None
        if self.picture is not None:
            from PIL import Image

            events_dir.mkdir(parents=True, exist_ok=True)
            snapshot = events_dir / f"{a['id']}.png"
            Image.fromarray(self.picture[..., 0] if self.picture.shape[-1] == 1 else self.picture).save(snapshot)
        self.send({**a, "type": "end", "tamper": e.regions[0] if e.regions else a["tamper"], "kinds": list(e.regions), "end_time": round(e.end_s, 3),
                   "frame_time": round(e.end_s, 3), "snapshot": str(snapshot) if snapshot else None, "dropped_frames": self.dropped()})  # fmt: skip
        self.n_events += 1
        return True
