"""Many cameras at once: every camera's stages and regions as one Dask task graph (``cli.py fleet``).

A fleet file (TOML) names each camera's data and work folders::

    config = "site.toml"            # optional: every camera's config

    [cameras.lobby]
    data = "cams/lobby"             # train/, test/, labels.json as for one camera
    work = "work/lobby"
    config = "lobby.toml"           # optional: this camera's own config
    videos = "cams/lobby/today"     # optional: what `fleet score` scores [default: DATA/test]

Relative paths are taken from the fleet file's folder. For ``train``, a
camera's clips are extracted, sliced and its regions trained as tasks that
wait only for what they need (a region waits for its camera's tubes, not for
other cameras), so the cluster is kept busy with every camera at once. A
camera whose input is bad fails alone, with its one-line error; the others
finish. Each task skips what is already up to date, so running the command
again resumes where a killed run stopped.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cuboid_ad.core.artifacts import remove_stale_temporaries
from cuboid_ad.core.cluster import Cluster
from cuboid_ad.core.config import Config, load_config
from cuboid_ad.core.errors import ConfigError, UserError
from cuboid_ad.core.lock import work_lock
from cuboid_ad.core.progress import progress
from cuboid_ad.core.workdir import WorkDir
from cuboid_ad.ensemble.ensemble import Ensemble
from cuboid_ad.pipeline.media.decode import list_clips
from cuboid_ad.pipeline.stages.evaluate import plan_evaluate, score_clip_task, summarise
from cuboid_ad.pipeline.stages.extract import check_same_size, extract_task, plan_extract
from cuboid_ad.pipeline.stages.slice import plan_slicing, slice_task
from cuboid_ad.pipeline.stages.train import finish_training, fit_region_task

CAMERA_KEYS = {"data", "work", "config", "videos"}


@dataclass(frozen=True)
class Camera:
    name: str
    data: Path
    work: Path
    config: Path | None = None
    videos: Path | None = None

    @property
    def to_score(self) -> Path:
        return self.videos or self.data / "test"


@dataclass
class CameraResult:
    """How one camera's part of the graph ended: ``error`` None, or its one-line message."""

    camera: Camera
    error: str | None = None
    summary: str = ""
    seconds: float = 0.0
    value: Any = None


def load_fleet(path: str | Path) -> list[Camera]:
    """The cameras of a fleet file, checked: every camera has data and work, no two share a work folder."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such fleet file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable TOML fleet file ({exc})") from None
    base = path.parent
    unknown = set(doc) - {"config", "cameras"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; expected config and [cameras.NAME] tables")
    cameras = doc.get("cameras")
    if not isinstance(cameras, dict) or not cameras:
        raise ConfigError(f"{path}: no cameras; add a [cameras.NAME] table with data and work")
    default_config = doc.get("config")
    out, works = [], {}
    for name, entry in cameras.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: cameras.{name} must be a table with data and work")
        unknown = set(entry) - CAMERA_KEYS
        missing = {"data", "work"} - set(entry)
        if unknown or missing:
            what = [f"unknown key(s) {', '.join(sorted(unknown))}"] if unknown else []
            what += [f"missing {', '.join(sorted(missing))}"] if missing else []
            raise ConfigError(f"{path}: cameras.{name}: {'; '.join(what)} (keys: {', '.join(sorted(CAMERA_KEYS))})")
        config = entry.get("config", default_config)
        cam = Camera(
            name,
            (base / entry["data"]).absolute(),
            (base / entry["work"]).absolute(),
            (base / config).absolute() if config else None,
            (base / entry["videos"]).absolute() if "videos" in entry else None,
        )
        if cam.work.resolve() in works:
            raise ConfigError(f"{path}: cameras {works[cam.work.resolve()]} and {name} share the work folder {cam.work}")
        works[cam.work.resolve()] = name
        out.append(cam)
    return out


# -- one camera's part of the graph ------------------------------------------------------------------


@dataclass
class _Part:
    """A camera's futures and how to read its end: ``last`` finishes after every other one."""

    futures: list = field(default_factory=list)
    last: Any = None
    describe: Callable[[Any], str] = str


def _train_part(cam: Camera, cfg: Config, cluster: Cluster, device: str, threads: int) -> _Part:
    wd = WorkDir(cam.work)
    targets = plan_extract(cam.data / "train", wd.frames)
    part = _Part()
    extracted = [cluster.submit(extract_task, src, dst, cfg, key=f"{cam.name}-extract-{src.name}") for src, dst in targets.items()]
    planned = cluster.submit(_plan_slicing_after, list(targets.values()), wd.frames, wd.cuboids, cfg, extracted, key=f"{cam.name}-plan-cuboids")
    sliced = [cluster.submit(_after, slice_task, (dst, wd.cuboids, cfg), [planned], key=f"{cam.name}-cuboids-{dst.stem}") for dst in targets.values()]
    wd.models.mkdir(parents=True, exist_ok=True)
    trained = [
        cluster.submit(
            _after, fit_region_task, (wd.cuboids, wd.models, rid, cfg, None, device, cluster.threads, threads), sliced, key=f"{cam.name}-train-{rid}"
        )
        for rid in cfg.cuboids.region_ids
    ]
    part.last = cluster.submit(_after, finish_training, (wd.models, cfg, wd.frames), trained, key=f"{cam.name}-manifest")
    part.futures = [*extracted, planned, *sliced, *trained, part.last]
    n_trained = len(cfg.cuboids.region_ids)
    part.describe = lambda manifest: f"{_n(len(targets), 'clip')}, {n_trained} region models -> {manifest}"
    return part


def _evaluate_part(cam: Camera, cfg: Config | None, cluster: Cluster, device: str, threads: int) -> _Part:
    wd = WorkDir(cam.work)
    clips_path, labels_path = cam.data / "test", cam.data / "labels.json"
    labels, clips, ids = plan_evaluate(clips_path, labels_path)  # bad labels fail the camera before any task runs
    scored = [
        cluster.submit(score_clip_task, clip, wd.models, wd.eval / cid, cfg, device, False, 0, cluster.threads, key=f"{cam.name}-score-{cid}")
        for clip, cid in zip(clips, ids)
    ]
    part = _Part()
    part.last = cluster.submit(_summarise_task, labels, labels_path, wd.models, wd.eval, cfg, ids, scored, key=f"{cam.name}-metrics")
    part.futures = [*scored, part.last]

    def describe(m: dict) -> str:
        t = m["at_threshold"]
        auc = "n/a" if m["auc_pooled_raw"] is None else f"{m['auc_pooled_raw']:.4f}"
        fa = "n/a" if t["false_alarm_rate"] is None else f"{t['false_alarm_rate']:.3f}"
        det = "n/a" if t["detection_rate"] is None else f"{t['detection_rate']:.3f}"
        return f"{_n(len(ids), 'clip')}, {m['n_frames']} frames: AUC {auc}, false alarms {fa}, detection {det}"

    part.describe = describe
    return part


def _score_part(cam: Camera, cfg: Config | None, cluster: Cluster, device: str, threads: int) -> _Part:
    wd = WorkDir(cam.work)
    clips = list_clips(cam.to_score)
    if not clips:
        raise UserError(f"{cam.to_score}: holds no clips to score")
    scored = [
        cluster.submit(score_clip_task, clip, wd.models, wd.scores_for(clip), cfg, device, False, 0, cluster.threads, True, key=f"{cam.name}-score-{clip.name}")
        for clip in clips
    ]
    part = _Part()
    part.last = cluster.submit(_gather, scored, key=f"{cam.name}-scores")
    part.futures = [*scored, part.last]

    def describe(results: list) -> str:
        frames = sum(r.n_frames for r in results)
        events = sum(len(r.events) for r in results)
        return f"{_n(len(results), 'video')}, {frames} frames, {_n(events, 'event')} -> {wd.root / 'scores'}"

    part.describe = describe
    return part


# -- tasks that join others -------------------------------------------------------------------------


def _after(fn: Callable, args: tuple, _done: list) -> Any:
    """``fn(*args)`` once every future in ``_done`` has finished (Dask waits for futures passed as arguments)."""
    return fn(*args)


def _plan_slicing_after(frames_files: list[Path], frames_path: Path, cuboids_path: Path, cfg: Config, _extracted: list) -> None:
    remove_stale_temporaries(frames_path)  # of a worker killed mid-write
    check_same_size(frames_files)
    plan_slicing(frames_path, cuboids_path, cfg)


def _summarise_task(labels: dict, labels_path: Path, models_path: Path, out_path: Path, cfg: Config | None, ids: list[str], scored: list) -> dict:
    """The camera's metrics; its seconds are the clips' scoring time summed (they ran in parallel, on several workers)."""
    ens = Ensemble.load(models_path, cfg, "cpu")
    return summarise(dict(zip(ids, scored)), labels, labels_path, models_path, out_path, ens, sum(r.seconds for r in scored))


def _gather(results: list) -> list:
    return results


# -- the driver --------------------------------------------------------------------------------------

PARTS = {"train": (_train_part, True), "evaluate": (_evaluate_part, False), "score": (_score_part, False)}


def run_fleet(command: str, cameras: list[Camera], cluster: Cluster, device: str = "auto", threads: int = 0) -> list[CameraResult]:
    """Submit every camera's part of ``command`` (train, evaluate or score) as one graph; wait for all of it.

    Each camera's work folder is locked for the run (exclusively for train).
    Returns one result per camera, in the fleet's order; errors are in the
    results, never raised, so that one bad camera does not hide the others.
    """
    build, exclusive = PARTS[command]
    results = {cam.name: CameraResult(cam) for cam in cameras}
    parts: dict[str, _Part] = {}
    t0 = time.perf_counter()
    with ExitStack() as locks:
        for cam in cameras:
            try:
                locks.enter_context(work_lock(cam.work, exclusive=exclusive))
                cfg = load_config(cam.config) if command == "train" or cam.config else None
                parts[cam.name] = build(cam, cfg, cluster, device, threads)
            except UserError as exc:
                results[cam.name].error = str(exc)
        owner = {f.key: name for name, part in parts.items() for f in part.futures}
        pending = {name: len(part.futures) for name, part in parts.items()}
        futures = [f for p in parts.values() for f in p.futures]
        with cluster.cancelling(futures), progress(total=len(futures), desc=f"fleet {command}: {len(cameras)} cameras", unit="task") as bar:
            for fut in cluster.as_completed(futures):
                name = owner[fut.key]
                if fut is not parts[name].last:  # only `last` is read: the scheduler may forget the rest (Cluster.run)
                    fut.release()
                pending[name] -= 1
                if pending[name] == 0:
                    results[name].seconds = time.perf_counter() - t0
                bar.update(1)
        for name, part in parts.items():
            exc = part.last.exception()
            if exc is None:
                results[name].value = part.last.result()
                results[name].summary = part.describe(results[name].value)
            else:
                results[name].error = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
    return [results[cam.name] for cam in cameras]


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def format_results(results: list[CameraResult]) -> str:
    """One line per camera: ok or error, its time, what it made or why it failed."""
    width = max(len(r.camera.name) for r in results)
    lines = []
    for r in results:
        status = "ok   " if r.error is None else "error"
        lines.append(f"{r.camera.name:<{width}}  {status}  {r.seconds:7.1f} s  {r.summary if r.error is None else r.error}")
    return "\n".join(lines)
