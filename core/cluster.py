"""Running a stage's per-clip and per-region work as tasks on a Dask cluster (``--scheduler``).

The stages stay plain functions; with a :class:`Cluster` their per-item work
(one clip to extract or slice, one region to train, one clip to score) is
submitted as Dask tasks instead of running in local threads. A task carries
paths and small values only, never arrays or models: it reads and writes the
work folder, which must be on storage that every worker sees (checked at
connection with a probe file, see :func:`connect`).

Inside a task, :func:`in_task` picks torch's thread count from the
worker's share of its machine, :func:`report` sends progress to the client
(Dask events), and :class:`Released` tells a long task that nobody waits for
its result any more (the client was killed or cancelled), so that it stops at
the next batch instead of writing on behind a new run.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cuboid_ad.core.errors import UserError

log = logging.getLogger(__name__)

PROGRESS_TOPIC = "cuboid-ad-progress"


@dataclass
class Cluster:
    """A connected Dask client and what was learnt about its workers."""

    client: Any  # distributed.Client
    address: str
    threads: dict[str, int] = field(default_factory=dict)  # worker address -> torch threads per task

    @property
    def workers(self) -> int:
        return len(self.threads)

    def submit(self, fn: Callable, *args, key: str, **kwargs):
        """One task, named ``key`` in Dask's dashboard; a random suffix keeps it apart from a killed run's tasks.

        Paths are made absolute: a worker does not run in this process's folder.
        """
        args = tuple(p.absolute() if isinstance(p, Path) else p for p in args)
        return self.client.submit(fn, *args, key=f"{key}-{secrets.token_hex(4)}", pure=False, **kwargs)

    def run(self, fn: Callable, items: list[tuple], keys: list[str], on_done: Callable[[int, Any], None] | None = None,
            kwargs: dict[str, Any] | None = None) -> list[Any]:  # fmt: skip
        """``fn(*item, **kwargs)`` for every item as tasks; results in the items' order.

        ``on_done(i, result)`` is called as each finishes. The first task to
        raise cancels the others and its exception is raised here.
        """
        futures = [self.submit(fn, *item, key=k, **(kwargs or {})) for item, k in zip(items, keys)]
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(futures)
        with self.cancelling(futures):
            for fut in self.as_completed(futures):
                i = index[fut.key]
                results[i] = fut.result()  # raises the task's own exception
                # the result is in hand: let the scheduler forget the task, or it would run it again
                # if the worker holding its copy died (a region trained twice, its epoch state left behind)
                fut.release()
                if on_done is not None:
                    on_done(i, results[i])
        return results

    def as_completed(self, futures: list) -> Iterator:
        from distributed import as_completed

        return as_completed(futures, loop=self.client.loop)

    @contextmanager
    def cancelling(self, futures: list) -> Iterator[None]:
        """On the way out, however it is left (an error, Ctrl-C), cancel the tasks of ``futures`` not yet done."""
        try:
            yield
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    @contextmanager
    def progress_events(self, handler: Callable[..., None]) -> Iterator[None]:
        """While inside, every :func:`report` of a task calls ``handler(*args)`` here, in the client."""
        self.client.subscribe_topic(PROGRESS_TOPIC, lambda event: handler(*event[1]))
        try:
            yield
        finally:
            try:
                self.client.unsubscribe_topic(PROGRESS_TOPIC)
            except ValueError:
                pass


@contextmanager
def connect(address: str | None, roots: Iterable[str | Path], timeout: float = 30, warm_modules: tuple[str, ...] = ()) -> Iterator[Cluster | None]:
    """A :class:`Cluster` on the scheduler at ``address`` (None: yields None, work runs locally).

    Fails with one line when the scheduler cannot be reached, has no worker
    within ``timeout`` seconds, or has a worker that cannot read a probe file
    written in each of ``roots`` (the work folders): such a worker would
    otherwise fail every task, or write where nobody reads. ``warm_modules``: what every worker
    imports at once (the stages its tasks run), so that no task is timed with torch's imports.
    """
    if not address:
        yield None
        return
    from distributed import Client

    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise UserError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise UserError(f"the Dask scheduler at {address} has no workers (waited {timeout:.0f} s); start some with `dask worker {address}`") from None
        check_shared(client, [Path(r) for r in roots])
        try:
            client.run(_warm_up, ("torch", *warm_modules))
        except ImportError as exc:
            raise UserError(f"a Dask worker cannot import cuboid-ad ({exc}); install the project in the workers' Python (docs/cluster.md)") from None
        cluster = Cluster(client, address, worker_threads(client))
        log.info("cluster %s: %d workers", address, cluster.workers)
        yield cluster
    finally:
        client.close()


@contextmanager
def local_cluster(n_workers: int = 0) -> Iterator[str]:
    """A Dask cluster on this machine for the command's length: ``n_workers`` processes (default: one a core) of one thread."""
    import dask
    from distributed import Client, LocalCluster

    n_workers = n_workers or os.cpu_count() or 1
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536 so that they hand memory back to the
    # system sooner; one region trained 12% slower with it (docs/cluster.md). The thread caps are kept.
    environ = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}
    # a task's exception reaches the client, which reports it; the workers' own log of it would say it twice
    saved = dict(os.environ)  # the nannies, in this process, set those variables here before spawning a worker
    try:
        with (
            _quiet_here(),
            dask.config.set({"distributed.nanny.pre-spawn-environ": environ}),
            LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        ):
            with Client(cluster, set_as_default=False) as client:
                client.run(_quiet_worker)
            log.info("dask dashboard: %s", cluster.dashboard_link)
            yield cluster.scheduler_address
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _warm_up(names: tuple[str, ...]) -> None:
    import importlib

    for name in names:
        importlib.import_module(name)


def _quiet_worker() -> None:
    for name in ("distributed.worker", "distributed.nanny"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


@contextmanager
def _quiet_here() -> Iterator[None]:
    """Dask's start-up and shut-down chatter of a cluster in this process, down to errors."""
    loggers = [logging.getLogger(n) for n in ("distributed", "distributed.worker", "distributed.nanny", "distributed.scheduler")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL if lg.name != "distributed" else logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def check_shared(client, roots: list[Path]) -> None:
    """Every worker reads back, at the same path, a fresh token written in each root; else a UserError naming them."""
    probes = {}
    for root in roots:
        root.mkdir(parents=True, exist_ok=True)
        probe = root.resolve() / f".cluster-probe-{secrets.token_hex(8)}"
        token = secrets.token_hex(16)
        probe.write_text(token)
        probes[str(probe)] = token
    try:
        seen = client.run(_read_probes, list(probes))
    finally:
        for p in probes:
            Path(p).unlink(missing_ok=True)
    blind = []
    for worker, tokens in sorted(seen.items()):
        for (path, want), got in zip(probes.items(), tokens):
            if got != want:
                blind.append(f"{worker} cannot see {Path(path).parent}")
    if blind:
        raise UserError("the work folders must be on storage every Dask worker sees at the same path: " + "; ".join(blind))


def _read_probes(paths: list[str]) -> list[str | None]:
    out = []
    for p in paths:
        try:
            out.append(Path(p).read_text())
        except OSError:
            out.append(None)
    return out


def worker_threads(client) -> dict[str, int]:
    """Torch threads for a task on each worker: its machine's cores shared out over every task slot on that machine."""
    import joblib

    workers = client.scheduler_info(n_workers=-1)["workers"]
    cores = client.run(joblib.cpu_count)  # cores this process may use: affinity and container quotas count
    slots: dict[str, int] = {}
    for info in workers.values():
        slots[info["host"]] = slots.get(info["host"], 0) + info["nthreads"]
    return {addr: max(1, (cores.get(addr) or 1) // slots[info["host"]]) for addr, info in workers.items()}


def user_error_of(fn: Callable, *args: Any, **kwargs: Any) -> str | None:
    """Run ``fn``; the message of the UserError it raises, or None: so that one bad clip fails alone."""
    try:
        fn(*args, **kwargs)
    except UserError as exc:
        return str(exc)
    return None


def run_each(fn: Callable, items: list[tuple], keys: list[str], n_jobs: int, cluster: Cluster | None, on_frames: Callable[[int], object]) -> list[str]:
    """``fn(*item, on_frames=...)`` for every item, in up to ``n_jobs`` threads here or each as a task on ``cluster``
    (named by ``keys``; its progress comes back to ``on_frames`` through :func:`report`). Returns the error
    messages of the items whose UserError failed them; the others are done whatever those do."""
    if cluster is None:
        from joblib import Parallel, delayed

        jobs = Parallel(n_jobs=min(n_jobs, len(items)), prefer="threads", return_as="generator_unordered")(
            delayed(user_error_of)(fn, *item, on_frames=on_frames) for item in items
        )
    else:
        with cluster.progress_events(on_frames):
            jobs = cluster.run(user_error_of, [(fn, *item) for item in items], keys, kwargs={"on_frames": report})
    return [error for error in jobs if error]


# -- inside a task -------------------------------------------------------------------------------


def in_task(worker_threads: dict[str, int], requested: int = 0) -> None:
    """Set up a task: torch threads ``requested`` when given (the same arithmetic on every machine), else
    the worker's share of its machine; no progress bars (the client draws them from :func:`report`)."""
    import torch
    from distributed import get_worker

    from cuboid_ad.core.progress import set_progress

    set_progress(False)
    torch.set_num_threads(requested or worker_threads.get(get_worker().address, 1))


def report(*args) -> None:
    """Send ``args`` to the client's :meth:`Cluster.progress_events` handler."""
    from distributed import get_worker

    get_worker().log_event(PROGRESS_TOPIC, args)


class Released:
    """``is_set()`` turns true once the scheduler has let this task go: its client is gone or cancelled it."""

    def __init__(self) -> None:
        from distributed import get_worker

        self._worker = get_worker()
        self._key = self._worker.get_current_task()

    def is_set(self) -> bool:
        ts = self._worker.state.tasks.get(self._key)
        return ts is None or ts.state in ("cancelled", "released", "forgotten")
