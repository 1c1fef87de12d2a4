"""How work runs on this machine: which torch device, how many threads, and what Ctrl-C and SIGTERM do.

Every stage that computes (train, score, watch, supervise) asks here instead of
deciding on its own, so a GPU is used the same way everywhere and an
interruption winds down the same way everywhere.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cuboid_ad.core.errors import UserError


def resolve_device(device: str = "auto") -> str:
    """``auto``: CUDA when torch sees a GPU, else the CPU; ``cuda`` without a GPU is a user error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA GPU")
    return device


def plan_workers(n_items: int, n_jobs: int, device: str, threads: int = 0) -> tuple[int, int]:
    """(parallel workers, torch threads per worker) so that workers x threads = cores, unless ``threads`` is given."""
    import joblib

    cores = joblib.cpu_count()
    if n_jobs <= 0:
        n_jobs = 2 if device != "cpu" else cores
    n_jobs = max(1, min(n_jobs, n_items))
    return n_jobs, threads or max(1, cores // n_jobs)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch's intra-op threads set to ``n`` while inside (the worker threads inside share them), as they were after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def sigint_sets(stop: threading.Event) -> Iterator[None]:
    """While inside, Ctrl-C sets ``stop`` instead of raising KeyboardInterrupt; a second Ctrl-C raises.

    Workers poll ``stop`` between batches and return early, so the caller
    winds down within one batch and then raises KeyboardInterrupt itself.
    An exception raised into the main thread while worker threads are still
    inside torch makes the interpreter abort at exit, hence the handler.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return

    def on_sigint(signum, frame) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def signals_set(stop: threading.Event) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set ``stop`` (a service that ends cleanly: an open event gets its end)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Callable | int | None] = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda signum, frame: stop.set())
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
