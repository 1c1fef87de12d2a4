"""One writer per work folder.

Stages that write frames, cuboids or models hold an exclusive lock on
``WORK/.lock``; scoring and evaluation, which only read models, hold a shared
one. A second command that cannot get its lock stops at once with a message
instead of interleaving writes. The lock is released by the kernel when the
process ends, however it ends.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cuboid_ad.core.errors import UserError


@contextmanager
def work_lock(root: str | Path, exclusive: bool) -> Iterator[None]:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            doing = "reading" if exclusive else "writing"
            raise UserError(f"{root} is in use: another cuboid-ad command is {doing} it; wait for it to finish or use another --work") from None
        yield
