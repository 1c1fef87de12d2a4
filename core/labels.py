"""The labels file: which frames of each test clip are anomalous (the layout of UCSD Ped2's ``labels.json``)::

    {"01": {"frames": 180, "anomalous": [[61, 180]]}, ...}

frame ranges 1-based and inclusive.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cuboid_ad.core.arrays import runs
from cuboid_ad.core.errors import InputError


def load_labels(path: str | Path) -> dict[str, tuple[int, list[tuple[int, int]]]]:
    """clip id -> (frame count, anomalous ranges), checked for shape and bounds."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: labels file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected an object of clip id -> {{frames, anomalous}}")
    labels = {}
    for cid, entry in raw.items():
        try:
            n = int(entry["frames"])
            ranges = [(int(a), int(b)) for a, b in entry["anomalous"]]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: clip {cid!r} needs 'frames' and 'anomalous': [[first, last], ...]") from None
        for a, b in ranges:
            if not 1 <= a <= b <= n:
                raise InputError(f"{path}: clip {cid!r} range [{a}, {b}] is outside frames 1..{n}")
        labels[cid] = (n, ranges)
    return labels


def frame_labels(n_frames: int, ranges: list[tuple[int, int]]) -> np.ndarray:
    """The anomalous-frame mask ``(n_frames,)`` of a clip's ranges."""
    y = np.zeros(n_frames, dtype=bool)
    for a, b in ranges:
        y[a - 1 : b] = True
    return y


def label_ranges(mask: np.ndarray) -> list[list[int]]:
    """A clip's anomalous-frame mask -> its ranges as the labels file writes them (1-based, inclusive)."""
    return [[a + 1, b] for a, b in runs(mask)]



def clip_truth(labels_path: str | Path, clip_id: str, n_frames: int) -> np.ndarray:
    """The labelled anomalous frames ``(n_frames,)`` of one clip; refuses a labels file that does not describe it."""
    labels = load_labels(labels_path)
    if clip_id not in labels:
        raise InputError(f"{labels_path}: no entry for clip {clip_id!r} (clips there: {', '.join(sorted(labels)[:8])}…)")
    n, ranges = labels[clip_id]
    if n != n_frames:
        raise InputError(f"{labels_path}: clip {clip_id!r} has {n} frames there but {n_frames} were decoded")
    return frame_labels(n, ranges)
