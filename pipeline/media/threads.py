"""Overlap I/O with compute: a prefetching iterator and an ordered background worker.

torch releases the GIL inside its operations, so while the main thread runs
the models, one helper thread can read the next frames from ffmpeg and
another can build and write the previous frames' maps.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate over ``items`` in a helper thread, at most ``depth`` items ahead; errors re-raised here."""
    it = iter(items)
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for x in it:
                if not put(("item", x)):
                    return
            put(("done", None))
        except BaseException as exc:  # handed to the consumer
            put(("error", exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # e.g. stop the ffmpeg process behind a generator

    helper = threading.Thread(target=produce, name="prefetch", daemon=True)
    helper.start()
    try:
        while True:
            kind, x = q.get()
            if kind == "item":
                yield x
            elif kind == "done":
                return
            else:
                raise x
    finally:
        stop.set()
        helper.join()


class Background:
    """Run calls one at a time, in submission order, in one helper thread.

    At most ``depth`` calls wait; an error surfaces at the next ``submit`` or
    at ``close``. Use as a context manager: leaving waits for every call.
    """

    def __init__(self, depth: int = 2):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="background")
        self.pending: deque[Future] = deque()
        self.depth = depth

    def submit(self, fn: Callable[..., object], *args) -> None:
        while self.pending and (self.pending[0].done() or len(self.pending) >= self.depth):
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(fn, *args))

    def close(self) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Background":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing: wait for the helper, keep the first error
            for f in self.pending:
                f.cancel()
            self.pool.shutdown(wait=True, cancel_futures=True)
