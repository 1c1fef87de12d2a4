"""One writer per work folder.

Stages that write frames, cuboids or models hold an exclusive lock on
``WORK/.lock``; scoring and evaluation, which only read models, hold a shared
one. A second command that cannot get its lock stops at once with a message
instead of interleaving writes. The lock is released by the kernel when the
process ends, however it ends.

Feedback (marking stretches as normal, updating the models with them) writes
only new files and then the manifest, atomically, which readers never see half
made: it holds the shared lock (no training may run meanwhile) and an exclusive
``WORK/.feedback.lock`` (one feedback writer at a time), so that a camera being
watched takes up a new version of its models without being stopped.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cuboid_ad.core.errors import UserError


@contextmanager
def work_lock(root: str | Path, exclusive: bool, name: str = ".lock") -> Iterator[None]:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / name, "a+") as fh:
        try:
            fcntl.flock(fh, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            doing = "reading" if exclusive else "writing"
            raise UserError(f"{root} is in use: another cuboid-ad command is {doing} it; wait for it to finish or use another --work") from None
        yield


@contextmanager
def feedback_lock(root: str | Path) -> Iterator[None]:
    """For feedback's writes: no training at the same time, one feedback writer, readers welcome (see the module doc)."""
    with work_lock(root, exclusive=False), work_lock(root, exclusive=True, name=".feedback.lock"):
        yield
