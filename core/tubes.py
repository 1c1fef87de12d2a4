"""What a tube holds, and how its uint8 values read back.

A region's *tube* is its crop of every frame of a clip, resized to P x P:
uint8 ``(n_frames, channels, P, P)``. It holds either the frames' pixels
(0..255) or their optical flow (dx, dy) in patch pixels per frame, coded as
``FLOW_ZERO + FLOW_GAIN * flow`` (so +-4 patch pixels per frame in steps of
1/32; 128 means no motion). The cuboid stage writes tubes, the models read
them: this module is the one place the code is defined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOW_GAIN = 32.0  # code steps per patch pixel per frame
FLOW_ZERO = 128.0  # the code of "no motion"


def code_to_flow(code):
    """uint8 (or float) flow codes -> flow in patch pixels per frame."""
    return (code - FLOW_ZERO) / FLOW_GAIN


@dataclass(frozen=True)
class RegionTube:
    """One clip's tube of one region, in memory."""

    clip_id: str
    tube: np.ndarray  # uint8 (n_frames, channels, P, P)
    window_starts: np.ndarray  # int64 (n_windows,): the training windows' first frames
    fps: float
