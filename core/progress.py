"""The one progress-bar helper every stage uses; the CLI turns it off with ``--quiet``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

_enabled = True


def set_progress(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def progress(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, or a silent one when progress is off."""
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=not _enabled, **kwargs)
