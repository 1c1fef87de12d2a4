"""The files a scored clip leaves: ``scores.csv``, ``events.csv`` and ``maps.h5``, written as frames come and read back.

``scores.csv``
    one row per decoded frame: ``frame`` (1-based), ``time_s`` (the frame's own
    timestamp, seconds since the first frame), ``score`` (the largest region
    score), ``anomalous`` (0/1: the score is above the alarm threshold), then one
    column per region id holding that region's score, then ``<stream>_z`` for every
    stream of ``score.streams``: its largest region z in the frame (which stream
    fired), then ``tamper``: the camera's view is ``covered``, ``blurred``, ``moved``
    or ``shaking`` (``pipeline.scoring.tamper``; empty when it is fine); with
    ``score.classifier_weight`` set, the score and flag include the supervised
    classifier's vote and a last column ``p_anomalous`` holds it.
``events.csv``
    one row per event (``ensemble.events``): ``event``, ``kind`` (``anomaly`` or
    ``tamper``), ``first_frame``, ``last_frame`` (1-based, inclusive), ``start_s``,
    ``end_s``, ``peak_frame``, ``peak_s``, ``peak_score``, ``regions`` (an anomaly's
    regions above the threshold, strongest first; a tamper event's kinds).
``maps.h5``
    ``maps`` float16 (n_frames, height, width): the anomaly map, every cell's z placed
    in the frame (overlapping regions averaged), in steps of 1/8; ``region_z``
    (n_frames, n_regions); ``stream_z`` (n_frames, n_regions, n_streams): each stream's
    region z; ``score``, ``anomalous``, ``time_s`` (n_frames,); ``reconstructions``
    uint8 (n_frames, n_regions, P, P): what each region's model rebuilt, as
    ``ensemble.detector.shown_reconstruction`` draws it, times 255; attributes:
    config, source and video stream, nominal fps, region ids and boxes, the stream
    names (``streams``), the alarm threshold.
"""

from __future__ import annotations

import csv
import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from cuboid_ad.core.artifacts import atomic_path, open_h5, recorded_config, stamp
from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import UserError
from cuboid_ad.ensemble.ensemble import Ensemble, ScoredFrames
from cuboid_ad.ensemble.events import Event

MAP_STEPS = 8  # maps.h5 stores anomaly maps rounded to 1/MAP_STEPS of a z unit
EVENT_COLUMNS = ["event", "kind", "first_frame", "last_frame", "start_s", "end_s", "peak_frame", "peak_s", "peak_score", "regions"]


def stream_columns(stream_names: list[str]) -> list[str]:
    """The per-stream columns of a scores file: each stream's largest region z in the frame."""
    return [f"{name}_z" for name in stream_names]


def score_values(s: ScoredFrames, i: int) -> list[str]:
    """Row ``i`` of scored frames as a scores file writes it: score, flag, every region's score, every stream's largest z,
    the tamper condition."""
    return [f"{s.score[i]:.4f}", str(int(s.anomalous[i])), *(f"{v:.4f}" for v in s.region_z[i]), *(f"{v:.4f}" for v in s.stream_z[i].max(axis=0)),
            s.tamper[i]]  # fmt: skip


class ScoreFiles:
    """scores.csv and maps.h5 written chunk by chunk to temporary names, renamed when the clip is done; events.csv at the end."""

    def __init__(self, stack: ExitStack, out_path: Path, ens: Ensemble, source: Path, stream: int, fps: float, with_maps: bool,
                 with_classifier: bool = False):  # fmt: skip
        cfg = ens.cfg
        self.out_path = out_path
        self.with_classifier = with_classifier
        self.files = [out_path / "scores.csv"]
        tmp_csv = stack.enter_context(atomic_path(self.files[0]))
        self.csv_file = stack.enter_context(open(tmp_csv, "w", newline="", encoding="utf-8"))
        self.csv = csv.writer(self.csv_file)
        self.csv.writerow(["frame", "time_s", "score", "anomalous", *ens.region_ids, *stream_columns(ens.stream_names), "tamper",
                           *(["p_anomalous"] if with_classifier else [])])  # fmt: skip
        self.h5 = None
        if with_maps:
            self.files.append(out_path / "maps.h5")
            tmp_h5 = stack.enter_context(atomic_path(self.files[1]))
            self.h5 = stack.enter_context(h5py.File(tmp_h5, "w"))
            H, W = ens.frame_size
            R, S = len(ens.regions), len(ens.stream_names)
            P = cfg.cuboids.patch_size
            self.ds = {
                "maps": self.h5.create_dataset(
                    "maps", (0, H, W), np.float16, maxshape=(None, H, W), chunks=(1, H, W), compression="gzip", compression_opts=1, shuffle=True,
                    rdcc_nbytes=0,  # written in whole chunks: a cache only holds memory (see cuboids.store)
                ),
                "region_z": self.h5.create_dataset("region_z", (0, R), np.float32, maxshape=(None, R), chunks=(256, R)),
                "stream_z": self.h5.create_dataset("stream_z", (0, R, S), np.float32, maxshape=(None, R, S), chunks=(256, R, S)),
                "score": self.h5.create_dataset("score", (0,), np.float32, maxshape=(None,), chunks=(1024,)),
                "anomalous": self.h5.create_dataset("anomalous", (0,), np.uint8, maxshape=(None,), chunks=(1024,)),
                "time_s": self.h5.create_dataset("time_s", (0,), np.float64, maxshape=(None,), chunks=(1024,)),
                "reconstructions": self.h5.create_dataset(
                    "reconstructions", (0, R, P, P), np.uint8, maxshape=(None, R, P, P), chunks=(16, R, P, P), compression="gzip",
                    compression_opts=1, rdcc_nbytes=0,
                ),
            }  # fmt: skip
            stamp(
                self.h5.attrs,
                "maps",
                cfg,
                source_path=str(source.resolve()),
                stream=stream,
                fps=fps,
                region_ids=json.dumps(ens.region_ids),
                streams=json.dumps(ens.stream_names),
                boxes=np.array([[r.top, r.left, r.height, r.width] for r in ens.regions]),
                threshold=ens.threshold_,
            )

    def write(self, s: ScoredFrames, maps: np.ndarray | None) -> None:
        """Scored frames (with their times) and, for maps.h5, their anomaly maps ``(n, H, W)``."""
        for i in range(len(s)):
            extra = [f"{s.p_anomalous[i]:.4f}"] if self.with_classifier else []
            self.csv.writerow([s.first + i + 1, f"{s.times[i]:.3f}", *score_values(s, i), *extra])
        if self.h5 is not None:
            if maps is not None:  # steps of 1/8 of a z unit: smaller files, invisible in a heatmap
                maps = np.round(maps * MAP_STEPS) / MAP_STEPS
            values = {
                "maps": maps, "region_z": s.region_z, "stream_z": s.stream_z, "score": s.score, "anomalous": s.anomalous, "time_s": s.times,
                "reconstructions": np.round(s.reconstructions * 255.0).astype(np.uint8),
            }  # fmt: skip
            for name, ds in self.ds.items():
                n = ds.shape[0]
                ds.resize(n + len(s), axis=0)
                ds[n:] = values[name]

    def write_events(self, events: list[Event]) -> None:
        path = self.out_path / "events.csv"
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(EVENT_COLUMNS)
            for k, e in enumerate(sorted(events, key=lambda e: (e.first, e.kind)), 1):
                w.writerow([k, e.kind, e.first + 1, e.last + 1, f"{e.start_s:.3f}", f"{e.end_s:.3f}", e.peak_frame + 1,
                            f"{e.peak_s:.3f}", f"{e.peak_score:.4f}", " ".join(e.regions)])  # fmt: skip
        self.files.append(path)


@dataclass(frozen=True)
class Maps:
    """What a maps.h5 holds, its per-frame arrays read; the anomaly maps stay on disk until asked for."""

    path: Path
    cfg: Config
    score: np.ndarray  # (n,)
    anomalous: np.ndarray  # (n,) bool
    region_z: np.ndarray  # (n, R)
    stream_z: np.ndarray  # (n, R, S)
    times: np.ndarray  # (n,)
    region_ids: list[str]
    streams: list[str]
    boxes: np.ndarray  # (R, 4): top, left, height, width
    threshold: float
    fps: float
    stream: int  # the video stream of the source that was scored

    @property
    def n_frames(self) -> int:
        return len(self.score)

    def anomaly_maps(self, frames: list[int]) -> dict[int, np.ndarray]:
        """The anomaly maps ``(H, W)`` float32 of the chosen frames (0-based)."""
        with open_h5(self.path, "maps") as fh:
            return {i: fh["maps"][i].astype(np.float32) for i in frames}


def read_maps(path: str | Path) -> Maps:
    path = Path(path)
    with open_h5(path, "maps") as fh:
        a = fh.attrs
        return Maps(
            path, recorded_config(dict(a), path), fh["score"][()], fh["anomalous"][()].astype(bool), fh["region_z"][()], fh["stream_z"][()],
            fh["time_s"][()], json.loads(a["region_ids"]), json.loads(a["streams"]), a["boxes"], float(a["threshold"]), float(a["fps"]),
            int(a.get("stream", 0)),
        )  # fmt: skip


def maps_source(maps_path: Path) -> tuple[str, int] | None:
    """The source path and video stream a maps file was scored from, or None if it is missing,
    unreadable or of another format version."""
    try:
        with open_h5(maps_path, "maps") as fh:
            return str(fh.attrs.get("source_path")), int(fh.attrs.get("stream", 0))
    except UserError:
        return None
