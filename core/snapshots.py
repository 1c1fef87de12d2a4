"""Training state kept after every epoch, so that a killed run resumes where it stopped.

A snapshot is saved beside the artifact it will become (``<name>.partial.pt``)
with a *record* of what it was trained on (config, clips, classes); it is
resumed only by a run whose record is the same, and removed once the artifact
is written. An unreadable snapshot is only a lost shortcut: training starts over.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cuboid_ad.core.artifacts import atomic_path

log = logging.getLogger(__name__)


def save_partial(path: Path, record: dict[str, Any], snapshot: dict[str, Any]) -> None:
    """Keep an epoch's training state with what it was trained on (``record``: config, clips, ...)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save({**record, "snapshot": snapshot}, tmp)


def load_partial(path: Path, record: dict[str, Any]) -> dict | None:
    """The last epoch's training state of an interrupted run whose ``record`` equals this one's, if any."""
    import torch

    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a partial state is only a shortcut: when unreadable, train from scratch
        log.warning("%s: unreadable, training from the start", path)
        return None
    if not isinstance(saved, dict) or any(saved.get(k) != v for k, v in record.items()):
        return None
    return saved["snapshot"]
