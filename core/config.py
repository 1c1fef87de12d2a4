"""The one configuration of the whole chain.

Defaults live here, in code. A TOML file may override any of them, section by
section (``[extract]``, ``[cuboids]``, ``[model]``, ``[train]``, ``[score]``, ``[live]``,
``[serve]``, ``[supervise]``),
and may start from a named preset (``preset = "paper"``). Unknown keys and
impossible values are refused with a message naming them.

Every artifact records ``Config.to_dict()``; a reader compares the sections its
kind depends on (``core.artifacts.KINDS``) with :func:`config_differences` and
refuses a mismatch.
Only settings that change results belong here; how many cores to use, which
device, or how many frames to hold per chunk are function arguments instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cuboid_ad.core.errors import ConfigError

SECTIONS = ("extract", "cuboids", "model", "train", "score", "live", "serve", "supervise")
FLOW_PRESETS = ("medium", "fast", "ultrafast")
ARCHITECTURES = ("conv3d", "convlstm")  # OpenCV's DIS presets, slowest and finest first


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass(frozen=True)
class ExtractConfig:
    """How clips are decoded into working frames."""

    color: str = "gray"  # "gray" (1 channel) or "rgb" (3 channels)
    frame_height: int = 240  # working height in pixels
    frame_width: int = 0  # working width; 0 keeps the source's aspect ratio
    fps: float = 0.0  # resample to this rate; 0 keeps the source's rate
    frame_folder_fps: float = 10.0  # rate assumed for image sequences (UCSD: 10)

    def __post_init__(self) -> None:
        _check(self.color in ("gray", "rgb"), f"extract.color must be 'gray' or 'rgb', not {self.color!r}")
        _check(16 <= self.frame_height <= 4320, f"extract.frame_height must be 16..4320, not {self.frame_height}")
        _check(
            self.frame_width == 0 or 16 <= self.frame_width <= 7680,
            f"extract.frame_width must be 0 (keep aspect) or 16..7680, not {self.frame_width}",
        )
        _check(0 <= self.fps <= 240, f"extract.fps must be 0 (keep) or a rate up to 240, not {self.fps}")
        _check(0 < self.frame_folder_fps <= 240, f"extract.frame_folder_fps must be in (0, 240], not {self.frame_folder_fps}")

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3


@dataclass(frozen=True)
class CuboidConfig:
    """How frames become regions x time windows."""

    grid_rows: int = 3
    grid_cols: int = 4
    # fraction of a region shared with its neighbour: with 0.25, a region also sees the edges of
    # the busier regions beside it (README, Results: the tuning set with carts)
    region_overlap: float = 0.25
    patch_size: int = 32  # every region crop is resized to patch_size x patch_size
    clip_length_in_frames: int = 10  # T, frames per cuboid
    frames_between_clips: int = 2  # stride between training windows
    blur_sigma: float = 1.0  # Gaussian blur of region crops, in patch pixels; 0 = off
    flow_preset: str = "medium"  # OpenCV DIS optical flow preset (flow input only): "medium", "fast" or "ultrafast"
    # flow input only (cuboids.camera): take what the camera itself does off the optical flow: its own motion (shake,
    # sway), steps of its exposure, and while the frames are noisy (night) their noise; footage of a still camera
    # with a steady exposure and little noise is left exactly as it is
    camera_corrections: bool = True

    def __post_init__(self) -> None:
        _check(1 <= self.grid_rows <= 32, f"cuboids.grid_rows must be 1..32, not {self.grid_rows}")
        _check(1 <= self.grid_cols <= 32, f"cuboids.grid_cols must be 1..32, not {self.grid_cols}")
        _check(0.0 <= self.region_overlap < 0.9, f"cuboids.region_overlap must be in [0, 0.9), not {self.region_overlap}")
        _check(8 <= self.patch_size <= 512, f"cuboids.patch_size must be 8..512, not {self.patch_size}")
        _check(
            2 <= self.clip_length_in_frames <= 256,
            f"cuboids.clip_length_in_frames must be 2..256, not {self.clip_length_in_frames}",
        )
        _check(
            1 <= self.frames_between_clips <= self.clip_length_in_frames,
            f"cuboids.frames_between_clips must be 1..clip_length_in_frames ({self.clip_length_in_frames}), "
            f"not {self.frames_between_clips}",
        )
        _check(0.0 <= self.blur_sigma <= 10.0, f"cuboids.blur_sigma must be in [0, 10], not {self.blur_sigma}")
        _check(
            self.flow_preset in FLOW_PRESETS,
            f"cuboids.flow_preset must be one of {', '.join(FLOW_PRESETS)}, not {self.flow_preset!r}",
        )

    @property
    def region_ids(self) -> list[str]:
        return [f"r{r}c{c}" for r in range(self.grid_rows) for c in range(self.grid_cols)]


@dataclass(frozen=True)
class ModelConfig:
    """The spatio-temporal autoencoder of every region."""

    input: str = "flow"  # "frames", "diff" (frame differences), "both", or "flow" (optical flow)
    architecture: str = "conv3d"  # "conv3d" (3D convolutions) or "convlstm" (2D convolutions around ConvLSTM layers)
    filters: tuple[int, ...] = (16, 32)  # encoder conv widths, each halves height and width
    bottleneck_channels: int = 8  # conv3d: 1x1x1 conv squeezing the code; convlstm: the middle ConvLSTM's width; 0 = none

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
        _check(
            self.input in ("frames", "diff", "both", "flow"),
            f"model.input must be 'frames', 'diff', 'both' or 'flow', not {self.input!r}",
        )
        _check(self.architecture in ARCHITECTURES, f"model.architecture must be one of {', '.join(ARCHITECTURES)}, not {self.architecture!r}")
        _check(1 <= len(self.filters) <= 5, f"model.filters must list 1..5 widths, not {list(self.filters)}")
        _check(all(1 <= f <= 1024 for f in self.filters), f"model.filters must be 1..1024 each, not {list(self.filters)}")
        _check(0 <= self.bottleneck_channels <= 1024, f"model.bottleneck_channels must be 0..1024, not {self.bottleneck_channels}")


@dataclass(frozen=True)
class TrainConfig:
    """How each region's autoencoder is fitted on normal windows."""

    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    val_fraction: float = 0.2  # share of frames held out, as contiguous blocks
    val_block_frames: int = 60  # length of one held-out block
    patience: int = 5  # epochs without validation improvement before stopping
    # windows an epoch trains on at most (a new random draw each epoch) and validates on (one fixed draw), so that
    # an epoch of hours of footage costs about what one of UCSD Ped2's 944 does; 0 = all (docs/experiments.md)
    max_windows_per_epoch: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        _check(1 <= self.epochs <= 10_000, f"train.epochs must be 1..10000, not {self.epochs}")
        _check(1 <= self.batch_size <= 4096, f"train.batch_size must be 1..4096, not {self.batch_size}")
        _check(0 < self.learning_rate < 1, f"train.learning_rate must be in (0, 1), not {self.learning_rate}")
        _check(0 <= self.weight_decay < 1, f"train.weight_decay must be in [0, 1), not {self.weight_decay}")
        _check(0.05 <= self.val_fraction <= 0.5, f"train.val_fraction must be in [0.05, 0.5], not {self.val_fraction}")
        _check(self.val_block_frames >= 1, f"train.val_block_frames must be >= 1, not {self.val_block_frames}")
        _check(self.patience >= 1, f"train.patience must be >= 1, not {self.patience}")
        _check(self.max_windows_per_epoch >= 0, f"train.max_windows_per_epoch must be >= 0, not {self.max_windows_per_epoch}")


@dataclass(frozen=True)
class ScoreConfig:
    """How reconstruction errors become cell, region and frame scores, alarms and events (see ensemble.fusion).

    Every region is divided into cells of ``cell_size`` x ``cell_size`` patch
    pixels. A cell's error is its mean squared reconstruction error, smoothed over
    the last ``smoothing_frames`` frames and normalised against normal frames (z) on
    the region's scale (``statistics = "region"``), or on the cell's own after the
    part its amount of motion explains is taken off (``"cell"``). A region's score
    is its largest cell z, a frame's its largest region score.
    """

    frames_between_clips: int = 5  # stride of scoring windows; <= clip length
    cell_size: int = 4  # side of a cell in patch pixels
    # the scale cells are measured on: each "region"'s own, or each "cell"'s own after taking off
    # what its motion explains (best on the training-split tuning sets, lost on Ped2's test split:
    # docs/experiments.md, 2026-11-30)
    statistics: str = "region"
    # "cell" only: the largest share of a cell's motion energy whose reconstruction error counts as
    # normal (in busy scenes more people make more error, which is not unusual); at 1, motion where
    # the model never learned any (a cell it rebuilds as still) is explained away too
    explained_motion_max: float = 1.0
    # motion energy added to every cell's error, r = e + weight x E: 0 = the learned error alone;
    # large = mostly the `speed` floor's "nothing moves" error (bench.motion); 0 kept on the
    # training-split tuning sets (docs/experiments.md)
    motion_weight: float = 0.0
    # the per-region streams (ensemble.streams) and each one's weight in a region's score: "reconstruction"
    # (how badly the autoencoder rebuilds a cell), "novelty" (how far its codes lie from the nearest of `code_bank`
    # normal codes of the region); weight 0 = computed and shown, not scored (docs/experiments.md: half each)
    streams: tuple[tuple[str, float], ...] = (("novelty", 0.5), ("reconstruction", 0.5))
    code_bank: int = 2048  # normal codes kept per region (a greedy k-centre subset of the training video's)
    # what novelty measures at each location: the autoencoder's "code" (its bottleneck, what the decoder
    # rebuilds from) or the wider "features" of the encoder's last layer before it (ensemble.model)
    novelty_features: str = "code"
    smoothing_frames: int = 5  # causal moving average of cell errors; a clip starts from the normal level
    # frames a cell's value must last to count in full: before the average, each frame's value is the smallest of it
    # and the persistence_frames - 1 before it (1 = off). A still texture a codec refreshes at once, or any glitch
    # of one frame, then raises nothing; what moves for several frames is seen that much later. 2: its rule and
    # figures in docs/experiments.md (60 kb/s video 1.88 -> 0 false events a minute, clean Ped2 AUC -0.004)
    persistence_frames: int = 2
    # flow noise (frame pixels a frame) that may move no region's z by more than 1 on 90% of normal frames: each
    # stream's spread is widened until it does (flow input; 0 = off). Where nothing normally moves, the spread is
    # otherwise near zero and the tenth of a pixel a shaken, noisy or blocky camera leaves becomes an alarm
    flow_jitter_px: float = 0.1
    calibrate_on: str = "all"  # normal frames that set each cell's mean and std: "all" or "held_out"
    # share of held-out normal frames the alarm threshold lets through: the largest of 0.001 ... 0.05 that kept
    # false alarms within 10% on both training-split tuning sets (docs/experiments.md)
    false_alarm_rate: float = 0.05
    # false events an hour of normal footage the alarm threshold may let through, estimated from held-out normal
    # footage and the tail of its event peaks (ensemble.alarms); the threshold is raised until it does; 0 = off.
    # 10: one every six minutes at most, an operator's terms, chosen before any figure (docs/experiments.md)
    false_events_per_hour: float = 10.0
    min_event_seconds: float = 0.5  # flagged stretches shorter than this raise no event
    event_gap_seconds: float = 1.0  # an event ends after this long without a flagged frame
    # weight of the supervised classifier's anomaly probability p in the frame score, in units of
    # the alarm threshold: score + weight x threshold x (2p - 1); 0 = off (needs `supervise` first)
    classifier_weight: float = 0.0

    def __post_init__(self) -> None:
        _check(self.frames_between_clips >= 1, f"score.frames_between_clips must be >= 1, not {self.frames_between_clips}")
        _check(self.cell_size >= 1, f"score.cell_size must be >= 1, not {self.cell_size}")
        _check(self.statistics in ("region", "cell"), f"score.statistics must be 'region' or 'cell', not {self.statistics!r}")
        _check(0.0 <= self.explained_motion_max <= 1.0, f"score.explained_motion_max must be in [0, 1], not {self.explained_motion_max}")
        _check(0.0 <= self.motion_weight <= 100.0, f"score.motion_weight must be in [0, 100], not {self.motion_weight}")
        streams = self.streams.items() if isinstance(self.streams, dict) else self.streams
        # sorted by name: equal tables are equal configs (the streams run in ensemble.streams' order anyway)
        object.__setattr__(self, "streams", tuple(sorted((str(k), float(v)) for k, v in streams)))
        names = [k for k, _ in self.streams]
        _check(len(names) == len(set(names)) and all(names), f"score.streams must name each stream once, not {names}")
        _check(all(0.0 <= w <= 100.0 for _, w in self.streams), f"score.streams weights must be in [0, 100], not {dict(self.streams)}")
        _check(any(w > 0 for _, w in self.streams), f"score.streams must give some stream a weight above 0, not {dict(self.streams)}")
        _check(16 <= self.code_bank <= 65536, f"score.code_bank must be 16..65536, not {self.code_bank}")
        _check(self.novelty_features in ("code", "features"), f"score.novelty_features must be 'code' or 'features', not {self.novelty_features!r}")
        _check(0.0 <= self.flow_jitter_px <= 5.0, f"score.flow_jitter_px must be in [0, 5], not {self.flow_jitter_px}")
        _check(1 <= self.smoothing_frames <= 1000, f"score.smoothing_frames must be 1..1000, not {self.smoothing_frames}")
        _check(1 <= self.persistence_frames <= 10, f"score.persistence_frames must be 1..10, not {self.persistence_frames}")
        _check(self.calibrate_on in ("all", "held_out"), f"score.calibrate_on must be 'all' or 'held_out', not {self.calibrate_on!r}")
        _check(0.0 < self.false_alarm_rate < 0.5, f"score.false_alarm_rate must be in (0, 0.5), not {self.false_alarm_rate}")
        _check(0.0 <= self.false_events_per_hour <= 3600, f"score.false_events_per_hour must be in [0, 3600], not {self.false_events_per_hour}")
        _check(0.0 <= self.min_event_seconds <= 3600, f"score.min_event_seconds must be in [0, 3600], not {self.min_event_seconds}")
        _check(0.0 < self.event_gap_seconds <= 3600, f"score.event_gap_seconds must be in (0, 3600], not {self.event_gap_seconds}")
        _check(0.0 <= self.classifier_weight <= 10.0, f"score.classifier_weight must be in [0, 10], not {self.classifier_weight}")


@dataclass(frozen=True)
class LiveConfig:
    """How `watch` treats a live stream: stalls, reconnection, queueing, what it keeps on disk."""

    stall_seconds: float = 20.0  # no frame for this long: ffmpeg is restarted
    reconnect_max_seconds: float = 60.0  # reconnection waits 1 s, doubling up to this
    queue_seconds: float = 10.0  # frames waiting to be scored; beyond this the oldest are dropped
    clip_before_seconds: float = 3.0  # an event's MP4 starts this long before its first flagged frame
    keep_events: int = 500  # the newest events whose snapshot and clip are kept (0: no limit)
    keep_megabytes: float = 2000.0  # at most this much of snapshots, clips and daily score files (0: no limit)
    mqtt_prefix: str = "cuboid-ad"  # MQTT topics: <prefix>/events, <prefix>/<camera>/status, <prefix>/available
    webhook_retries: int = 3  # tries after the first failed POST, 1 s apart and doubling

    def __post_init__(self) -> None:
        _check(0.5 <= self.stall_seconds <= 3600, f"live.stall_seconds must be in [0.5, 3600], not {self.stall_seconds}")
        _check(1.0 <= self.reconnect_max_seconds <= 3600, f"live.reconnect_max_seconds must be in [1, 3600], not {self.reconnect_max_seconds}")
        _check(0.5 <= self.queue_seconds <= 600, f"live.queue_seconds must be in [0.5, 600], not {self.queue_seconds}")
        _check(0.0 <= self.clip_before_seconds <= 60, f"live.clip_before_seconds must be in [0, 60], not {self.clip_before_seconds}")
        _check(self.keep_events >= 0, f"live.keep_events must be >= 0, not {self.keep_events}")
        _check(self.keep_megabytes >= 0, f"live.keep_megabytes must be >= 0, not {self.keep_megabytes}")
        _check(bool(re.fullmatch(r"[^#+\s]+", self.mqtt_prefix)), f"live.mqtt_prefix must be a topic without spaces, '#' or '+', not {self.mqtt_prefix!r}")
        _check(0 <= self.webhook_retries <= 10, f"live.webhook_retries must be 0..10, not {self.webhook_retries}")


@dataclass(frozen=True)
class ServeConfig:
    """The local web app (`serve`)."""

    max_upload_megabytes: float = 2048.0  # larger uploads are refused before they are read

    def __post_init__(self) -> None:
        _check(0 < self.max_upload_megabytes <= 1e6, f"serve.max_upload_megabytes must be in (0, 1e6], not {self.max_upload_megabytes}")


@dataclass(frozen=True)
class SuperviseConfig:
    """The supervised classifier (`supervise`, `classify`): a 3D CNN with spatial attention on windows of whole frames."""

    # frames (decoded as [extract] says) resized to this height, width by aspect; 128 was chosen over 64
    # in each fold of Ped2's cross-validation on that fold's own validation clips (docs/experiments.md)
    frame_height: int = 128
    window_frames: int = 8  # T: a window is the T frames up to the one it labels
    frames_between_windows: int = 2  # stride of training windows (classify labels every frame)
    ssim_threshold: float = 0.95  # a training window this similar (SSIM) to the last kept one of its class is skipped; 1 = keep all
    filters: tuple[int, ...] = (16, 32, 64)  # 3D conv widths; the first has stride 2 in space, each other one a 2x2x2 max pool after it
    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 1e-3
    patience: int = 6  # epochs without validation improvement before stopping
    val_fraction: float = 0.25  # share of the clips of each kind held out whole for validation
    augment: bool = True  # brightness/contrast, shifts of up to 1/8 of the frame, temporal jitter
    # horizontal flips too: off, since on a fixed camera where something happens is part of what it is
    # (a walker on the lawn flipped onto the path is normal)
    flip: bool = False
    include_train_clips: bool = True  # with labels.json: DATA/train's clips join as normal
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
        _check(16 <= self.frame_height <= 1080, f"supervise.frame_height must be 16..1080, not {self.frame_height}")
        _check(2 <= self.window_frames <= 128, f"supervise.window_frames must be 2..128, not {self.window_frames}")
        _check(1 <= self.frames_between_windows <= 1000, f"supervise.frames_between_windows must be 1..1000, not {self.frames_between_windows}")
        _check(0.0 < self.ssim_threshold <= 1.0, f"supervise.ssim_threshold must be in (0, 1], not {self.ssim_threshold}")
        _check(1 <= len(self.filters) <= 5, f"supervise.filters must list 1..5 widths, not {list(self.filters)}")
        _check(all(1 <= f <= 1024 for f in self.filters), f"supervise.filters must be 1..1024 each, not {list(self.filters)}")
        _check(1 <= self.epochs <= 10_000, f"supervise.epochs must be 1..10000, not {self.epochs}")
        _check(1 <= self.batch_size <= 4096, f"supervise.batch_size must be 1..4096, not {self.batch_size}")
        _check(0 < self.learning_rate < 1, f"supervise.learning_rate must be in (0, 1), not {self.learning_rate}")
        _check(self.patience >= 1, f"supervise.patience must be >= 1, not {self.patience}")
        _check(0.0 <= self.val_fraction <= 0.5, f"supervise.val_fraction must be in [0, 0.5], not {self.val_fraction}")


_SECTION_TYPES = {
    "extract": ExtractConfig,
    "cuboids": CuboidConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "score": ScoreConfig,
    "live": LiveConfig,
    "serve": ServeConfig,
    "supervise": SuperviseConfig,
}

# Keys whose default changed after artifacts were first written without them:
# (section, key) -> the behaviour of the code that wrote those artifacts.
RECORDED_BEFORE: dict[tuple[str, str], Any] = {
    ("score", "calibrate_on"): "held_out", ("model", "architecture"): "conv3d", ("score", "classifier_weight"): 0.0,
    ("score", "motion_weight"): 0.0, ("score", "streams"): {"reconstruction": 1.0}, ("score", "code_bank"): 2048,
    ("score", "novelty_features"): "code", ("cuboids", "camera_corrections"): False, ("score", "flow_jitter_px"): 0.0, ("score", "false_events_per_hour"): 0.0,
}
# Keys that no longer exist. An artifact that depends on them has a newer format version
# now and is refused by its kind's check; one that does not (frames, tubes) still records
# them in its config, where they are dropped on reading.
RETIRED: set[tuple[str, str]] = {("score", "region_score"), ("score", "region_patch"), ("score", "fusion"), ("score", "threshold_sigma")}

# Named starting points; a TOML file names one with `preset = "..."` and may override
# any key on top. "default" is the defaults above. Every other preset is written out in
# full, every key of every section, so that changing a default never changes a preset
# (tests/core/test_config.py checks that none is missing). "paper" is the user's
# reference architecture: pixels in, 64 then 128 filters, no bottleneck. "convlstm" is
# Chong & Tay's (2017) spatio-temporal autoencoder, scaled down (see ensemble.model).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "paper": {
        "extract": {"color": "gray", "frame_height": 240, "frame_width": 0, "fps": 0.0, "frame_folder_fps": 10.0},
        "cuboids": {
            "grid_rows": 3, "grid_cols": 4, "region_overlap": 0.25, "patch_size": 32, "clip_length_in_frames": 10,
            "frames_between_clips": 2, "blur_sigma": 1.0, "flow_preset": "medium", "camera_corrections": True,
        },
        "model": {"input": "frames", "architecture": "conv3d", "filters": [64, 128], "bottleneck_channels": 0},
        "train": {
            "epochs": 12, "batch_size": 32, "learning_rate": 1e-3, "weight_decay": 0.0, "val_fraction": 0.2,
            "val_block_frames": 60, "patience": 5, "max_windows_per_epoch": 0, "seed": 0,
        },
        "score": {
            "frames_between_clips": 5, "cell_size": 4, "statistics": "region", "explained_motion_max": 1.0, "motion_weight": 0.0,
            "streams": {"reconstruction": 1.0}, "code_bank": 2048, "novelty_features": "code", "smoothing_frames": 5, "persistence_frames": 1, "flow_jitter_px": 0.1,
            "calibrate_on": "all", "false_alarm_rate": 0.01, "false_events_per_hour": 0.0, "min_event_seconds": 0.5, "event_gap_seconds": 1.0, "classifier_weight": 0.0,
        },
        "live": {
            "stall_seconds": 20.0, "reconnect_max_seconds": 60.0, "queue_seconds": 10.0, "clip_before_seconds": 3.0,
            "keep_events": 500, "keep_megabytes": 2000.0, "mqtt_prefix": "cuboid-ad", "webhook_retries": 3,
        },
        "serve": {"max_upload_megabytes": 2048.0},
        "supervise": {
            "frame_height": 64, "window_frames": 8, "frames_between_windows": 2, "ssim_threshold": 0.95, "filters": [16, 32, 64], "epochs": 30,
            "batch_size": 16, "learning_rate": 1e-3, "patience": 6, "val_fraction": 0.25, "augment": True, "flip": False, "include_train_clips": True,
            "seed": 0,
        },
    },
    "convlstm": {
        "extract": {"color": "gray", "frame_height": 240, "frame_width": 0, "fps": 0.0, "frame_folder_fps": 10.0},
        "cuboids": {
            "grid_rows": 3, "grid_cols": 4, "region_overlap": 0.25, "patch_size": 32, "clip_length_in_frames": 10,
            "frames_between_clips": 2, "blur_sigma": 1.0, "flow_preset": "medium", "camera_corrections": True,
        },
        "model": {"input": "frames", "architecture": "convlstm", "filters": [32, 32], "bottleneck_channels": 16},
        "train": {
            "epochs": 12, "batch_size": 32, "learning_rate": 1e-3, "weight_decay": 0.0, "val_fraction": 0.2,
            "val_block_frames": 60, "patience": 5, "max_windows_per_epoch": 0, "seed": 0,
        },
        "score": {
            "frames_between_clips": 5, "cell_size": 4, "statistics": "region", "explained_motion_max": 1.0, "motion_weight": 0.0,
            "streams": {"reconstruction": 1.0}, "code_bank": 2048, "novelty_features": "code", "smoothing_frames": 5, "persistence_frames": 1, "flow_jitter_px": 0.1,
            "calibrate_on": "all", "false_alarm_rate": 0.01, "false_events_per_hour": 0.0, "min_event_seconds": 0.5, "event_gap_seconds": 1.0, "classifier_weight": 0.0,
        },
        "live": {
            "stall_seconds": 20.0, "reconnect_max_seconds": 60.0, "queue_seconds": 10.0, "clip_before_seconds": 3.0,
            "keep_events": 500, "keep_megabytes": 2000.0, "mqtt_prefix": "cuboid-ad", "webhook_retries": 3,
        },
        "serve": {"max_upload_megabytes": 2048.0},
        "supervise": {
            "frame_height": 64, "window_frames": 8, "frames_between_windows": 2, "ssim_threshold": 0.95, "filters": [16, 32, 64], "epochs": 30,
            "batch_size": 16, "learning_rate": 1e-3, "patience": 6, "val_fraction": 0.25, "augment": True, "flip": False, "include_train_clips": True,
            "seed": 0,
        },
    },
}  # fmt: skip


@dataclass(frozen=True)
class Config:
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    cuboids: CuboidConfig = field(default_factory=CuboidConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    supervise: SuperviseConfig = field(default_factory=SuperviseConfig)
    preset: str = "default"

    def __post_init__(self) -> None:
        T = self.cuboids.clip_length_in_frames
        _check(
            self.score.frames_between_clips <= T,
            f"score.frames_between_clips ({self.score.frames_between_clips}) must not exceed "
            f"cuboids.clip_length_in_frames ({T}), or some frames would be scored by no window",
        )
        depth = len(self.model.filters)
        P = self.cuboids.patch_size
        _check(
            P % (2**depth) == 0,
            f"cuboids.patch_size ({P}) must be divisible by 2**len(model.filters) = {2**depth}",
        )
        _check(P % self.score.cell_size == 0, f"score.cell_size ({self.score.cell_size}) must divide cuboids.patch_size ({P})")
        if self.needs_previous:
            _check(T >= 3, "model.input 'diff' needs cuboids.clip_length_in_frames >= 3")

    @property
    def tube_content(self) -> str:
        """What the cuboid stage stores: region crops of the frames' ``pixels``, or of their optical ``flow``."""
        return "flow" if self.model.input == "flow" else "pixels"

    @property
    def tube_channels(self) -> int:
        """Channels of a stored tube: the colour channels, or flow's (dx, dy)."""
        return 2 if self.tube_content == "flow" else self.extract.channels

    @property
    def in_channels(self) -> int:
        """Channels the autoencoder sees: the tube's, times two for 'both'."""
        return 2 * self.tube_channels if self.model.input == "both" else self.tube_channels

    @property
    def needs_previous(self) -> bool:
        """Whether a window carries the frame before it (for frame differences)."""
        return self.model.input in ("diff", "both")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"preset": self.preset}
        for name in SECTIONS:
            sec = dataclasses.asdict(getattr(self, name))
            out[name] = {k: _plain(v) for k, v in sec.items()}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "Config":
        data = dict(data)
        preset = data.pop("preset", "default")
        if preset not in PRESETS:
            raise ConfigError(f"{source}: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}; known: preset, {', '.join(SECTIONS)}")
        merged: dict[str, dict[str, Any]] = {s: dict(PRESETS[preset].get(s, {})) for s in SECTIONS}
        for name, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: [{name}] must be a table of settings")
            merged[name].update(values)
        sections = {}
        for name, values in merged.items():
            typ = _SECTION_TYPES[name]
            known = {f.name: f for f in fields(typ)}
            bad = sorted(set(values) - set(known))
            if bad:
                raise ConfigError(f"{source}: unknown key(s) {', '.join(f'{name}.{b}' for b in bad)}; known in [{name}]: {', '.join(known)}")
            for key, value in values.items():
                _check_type(f"{source}: {name}.{key}", value, known[key].default)
            sections[name] = typ(**values)
        return cls(preset=preset, **sections)

    @classmethod
    def from_record(cls, data: dict[str, Any], source: str = "artifact") -> "Config":
        """The config an artifact recorded. A key it lacks is older than the artifact's
        code: it takes the value that code behaved as (:data:`RECORDED_BEFORE`), not
        today's default, so that a changed default shows up as a config difference."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: recorded config is not a table of settings")
        data = {name: dict(values) if isinstance(values, dict) else values for name, values in data.items()}
        score = data.get("score")
        if isinstance(score, dict) and "novelty_weight" in score:  # before score.streams: the novelty stream's share
            w = float(score.pop("novelty_weight"))
            score.setdefault("streams", {"reconstruction": 1.0 - w, "novelty": w} if w > 0 else {"reconstruction": 1.0})
        for section, key in RETIRED:
            if isinstance(data.get(section), dict):
                data[section].pop(key, None)
        for (section, key), value in RECORDED_BEFORE.items():
            if isinstance(data.get(section, {}), dict):
                data.setdefault(section, {}).setdefault(key, value)
        return cls.from_dict(data, source)

    @classmethod
    def from_json(cls, text: str, source: str = "artifact") -> "Config":
        try:
            return cls.from_record(json.loads(text), source)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"{source}: recorded config is unreadable ({exc})") from None

    def with_overrides(self, **sections: dict[str, Any]) -> "Config":
        """A copy with some keys changed, e.g. ``cfg.with_overrides(train={"epochs": 2})``."""
        changed = {name: replace(getattr(self, name), **values) for name, values in sections.items()}
        return replace(self, **changed)


def _plain(value: Any) -> Any:
    """A setting as a TOML or JSON file holds it: lists for tuples, a table for (name, value) pairs."""
    if isinstance(value, tuple) and value and all(isinstance(v, tuple) for v in value):
        return {k: v for k, v in value}
    return list(value) if isinstance(value, tuple) else value


def _check_type(where: str, value: Any, default: Any) -> None:
    if isinstance(default, tuple) and default and isinstance(default[0], tuple):  # a table of name = number
        ok = isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                             for k, v in value.items())
        if not ok:
            raise ConfigError(f"{where} = {value!r} has the wrong type (expected a table of name = number)")
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, tuple):
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    else:  # pragma: no cover - every field has one of the types above
        ok = True
    if not ok:
        raise ConfigError(f"{where} = {value!r} has the wrong type (expected {type(default).__name__})")


def load_config(path: str | Path | None = None, preset: str | None = None) -> Config:
    """Defaults, then an optional preset, then an optional TOML file on top."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        source = str(path)
    else:
        source = "config"
    if preset is not None:
        if "preset" in data and data["preset"] != preset:
            raise ConfigError(f"{source} names preset {data['preset']!r} but --preset says {preset!r}")
        data["preset"] = preset
    try:
        return Config.from_dict(data, source)
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def config_differences(recorded: Config, current: Config, sections: tuple[str, ...]) -> list[str]:
    """Human-readable ``section.key: recorded -> current`` for every differing key."""
    diffs = []
    a, b = recorded.to_dict(), current.to_dict()
    for name in sections:
        for key in a[name]:
            if a[name][key] != b[name][key]:
                diffs.append(f"{name}.{key} was {a[name][key]!r}, now {b[name][key]!r}")
    if "cuboids" in sections and "model" not in sections and recorded.tube_content != current.tube_content:
        diffs.append(f"the tubes hold {recorded.tube_content}, model.input {current.model.input!r} needs {current.tube_content}")
    return diffs


def to_toml(cfg: Config) -> str:
    """The effective config as a TOML file that :func:`load_config` reads back."""
    d = cfg.to_dict()
    lines = [f"preset = {json.dumps(d['preset'])}"]
    for name in SECTIONS:
        lines.append("")
        lines.append(f"[{name}]")
        for key, value in d[name].items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")  # pragma: no cover
