"""Stage 3b, feedback: "this is normal", marked by an operator and absorbed by the models in seconds, without retraining.

Marking (:func:`record_normal`) keeps the stretch in ``WORK/feedback/<id>/``:
``stretch.h5`` (its frames at the working size, with a window of context on each
side, as a frames file: ``core.frames``; it records the models' config, which an
update checks) and ``record.json`` (where it came from, its times, when, which
models version saw it). A stretch comes from a scored clip's event
(``scores.csv``'s folder, :func:`stretch_of_event`), a watched camera's event
(its saved clip, :func:`stretch_of_watch_event`), or any video and times.

Absorbing (:func:`update_models`) makes a new version of the models from the
trained ones (version 0) and every recorded stretch: the stretches are scored by
the trained models; each region that scored above a share
``ensemble.detector.SETTLE`` of the alarm threshold in some stretch *absorbs*
them (``RegionDetector.absorbed``: its autoencoder fine-tuned for a few epochs on
the stretches with a replay of its own training windows, every stream fitted
again on its normal video, and the z of the cells that carried the stretches
(all of them when that takes more than ``ensemble.detector.CELLS_MAX``)
divided, while these cells move at least half as fast as the stretches did,
until they score below the alarm threshold: ``ensemble.fusion.Absorbed``); the
other cells score as before, and the other regions keep their files. The new checkpoints are
``<region>.v<k>.pt``; ``manifest.json``, written last, makes version ``k`` the
models in use (also kept as ``versions/manifest.v<k>.json``). An update killed
at any point leaves the previous version in use; run again, it reuses the
regions already absorbed. :func:`rollback` puts the previous version back.
The alarm threshold stays the trained models'. Before and after, the models'
own checks are printed: the share of their held-out normal frames they flag, and
the share of those frames, played three times faster, they catch.
"""

from __future__ import annotations

import csv
import logging
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed

from cuboid_ad.core.artifacts import new_folder, read_json, write_json
from cuboid_ad.core.config import Config, config_differences
from cuboid_ad.core.errors import ArtifactError, InputError, UserError
from cuboid_ad.core.frames import iter_frames_file, read_frames_info, write_frames
from cuboid_ad.core.runtime import plan_workers, resolve_device, torch_threads
from cuboid_ad.core.tubes import FLOW_ZERO, RegionTube
from cuboid_ad.core.windows import window_starts
from cuboid_ad.core.workdir import WorkDir
from cuboid_ad.cuboids.slicing import TubeCutter
from cuboid_ad.cuboids.store import load_region, tube_files
from cuboid_ad.ensemble.detector import SETTLE, RegionDetector
from cuboid_ad.ensemble.ensemble import Ensemble, write_manifest
from cuboid_ad.ensemble.fit import validation_masks
from cuboid_ad.pipeline.media.decode import open_clip, output_fps, read_frames, working_size
from cuboid_ad.pipeline.scoring.outputs import maps_source
from cuboid_ad.pipeline.scoring.session import Prepared, ScoringSession

log = logging.getLogger(__name__)

CONTEXT_SECONDS = 1.0  # frames kept before and after a marked stretch: the windows and smoothing around its edges
COMPARED = ("extract", "cuboids", "model", "train")  # what feedback and models must share


@dataclass
class Record:
    """One recorded stretch (``WORK/feedback/<id>/``)."""

    id: str
    folder: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def stretch(self) -> Path:
        return self.folder / "stretch.h5"


def _models_of(work: Path) -> tuple[Ensemble, Path]:
    models = WorkDir(work).models
    return Ensemble.load(models), models


def stretch_of_event(scores_path: str | Path, event: int) -> tuple[Path, int, float, float, str]:
    """(source video, its stream, from, to seconds, a description) of event ``event`` (1-based) of a scored clip's folder
    (``scores.csv``, ``events.csv`` and ``maps.h5``, which names the source)."""
    scores_path = Path(scores_path)
    events_csv = scores_path / "events.csv"
    if not events_csv.exists():
        raise InputError(f"{scores_path}: no events.csv; score the clip first (`cli.py score VIDEO`)")
    with open(events_csv, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("kind", "anomaly") == "anomaly"]
    if not 1 <= event <= len(rows):
        raise InputError(f"{events_csv}: no anomaly event {event} (it has {len(rows)})")
    source = maps_source(scores_path / "maps.h5")
    if source is None:
        raise InputError(f"{scores_path}: no readable maps.h5 to say which video was scored; mark it with VIDEO --from --to instead")
    row = rows[event - 1]
    return Path(source[0]), source[1], float(row["start_s"]), float(row["end_s"]), f"event {event} of {scores_path}"


def stretch_of_watch_event(work: str | Path, event_id: str, camera: str | None = None) -> tuple[Path, int, float, float, str]:
    """The saved clip of a watched camera's event: the whole clip is the stretch."""
    live = WorkDir(work).root / "live"
    cameras = [camera] if camera else sorted(p.name for p in live.iterdir()) if live.is_dir() else []
    for cam in cameras:
        clip = live / cam / "events" / f"{event_id}.mp4"
        if clip.exists():
            return clip, 0, 0.0, float("inf"), f"watch event {event_id} of camera {cam}"
    raise InputError(f"no saved clip of watch event {event_id!r} under {live} (events' clips are kept as live.keep_events says)")


def record_normal(work: str | Path, source: str | Path, from_s: float, to_s: float, stream: int = 0, how: str = "") -> Record:
    """Keep the frames of ``source`` from ``from_s`` to ``to_s`` (seconds, the frames' own times) as a normal stretch."""
    if to_s < from_s:
        raise InputError(f"--to {to_s} is before --from {from_s}")
    ens, _ = _models_of(Path(work))
    cfg = ens.cfg
    src = open_clip(source, cfg.extract, stream)
    width, height = working_size(src, cfg.extract)
    if (height, width) != tuple(ens.frame_size):
        raise InputError(f"{src.path}: decodes to {width}x{height} frames but the models were trained on {ens.frame_size[1]}x{ens.frame_size[0]}")
    lo, hi = from_s - CONTEXT_SECONDS, to_s + CONTEXT_SECONDS
    kept = [(f[(t >= lo) & (t <= hi)], t[(t >= lo) & (t <= hi)]) for f, t in read_frames(src, cfg.extract, 64, allow_damaged=True, with_times=True)]
    kept = [(f, t) for f, t in kept if len(f)]
    n = sum(len(f) for f, _ in kept)
    if n < cfg.cuboids.clip_length_in_frames:
        raise InputError(f"{src.path}: {n} frames between {from_s:g} s and {to_s:g} s, fewer than one window ({cfg.cuboids.clip_length_in_frames})")
    rid = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
    folder = WorkDir(work).feedback / rid
    with new_folder(folder):
        write_frames(folder / "stretch.h5", kept, (height, width, cfg.extract.channels), cfg, fps=output_fps(src, cfg.extract),
                     source_path=str(src.path.resolve()), stream=stream, from_s=from_s, to_s=to_s, codec=src.codec)  # fmt: skip
        first = float(kept[0][1][0])
        meta = {"id": rid, "source": str(src.path.resolve()), "stream": stream, "from_s": max(from_s, first), "to_s": min(to_s, float(kept[-1][1][-1])),
                "frames": n, "created": time.strftime("%Y-%m-%d %H:%M:%S"), "how": how or f"{src.path.name} {from_s:g}-{to_s:g} s",
                "models": {"version": ens.version, "created": ens.manifest.get("created")}}  # fmt: skip
        write_json(folder / "record.json", meta)
    log.debug("feedback %s: %d frames of %s recorded as normal", rid, n, src.path.name)
    return Record(rid, folder, meta)


def list_feedback(work: str | Path) -> list[Record]:
    """The recorded stretches, oldest first."""
    root = WorkDir(work).feedback
    out = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if (folder / "record.json").exists() and not folder.name.startswith("."):
            out.append(Record(folder.name, folder, read_json(folder / "record.json")))
    return out


def absorbed_ids(work: str | Path) -> list[str]:
    """The recorded stretches the models in use were made with."""
    manifest = WorkDir(work).models / "manifest.json"
    return list(read_json(manifest).get("feedback", {}).get("records", [])) if manifest.exists() else []


def undo_feedback(work: str | Path, rid: str) -> Record:
    """Forget a recorded stretch (the next update makes the models without it)."""
    for r in list_feedback(work):
        if r.id == rid:
            shutil.rmtree(r.folder)
            return r
    raise InputError(f"no feedback {rid!r} in {WorkDir(work).feedback}; `cli.py feedback list` shows them")


def _base_signature(models: Path, cfg: Config) -> str:
    """What identifies the trained models (version 0): their checkpoints' sizes and times."""
    parts = []
    for rid in cfg.cuboids.region_ids:
        st = (models / f"{rid}.pt").stat()
        parts.append(f"{rid}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


def _stretch_tubes(record: Record, ens: Ensemble) -> tuple[np.ndarray, float]:
    """A record's tubes ``(R, n, C, P, P)`` cut as the models cut frames, after checking it fits them."""
    info = read_frames_info(record.stretch)
    diffs = config_differences(info.cfg, ens.cfg, COMPARED)
    if (info.height, info.width) != tuple(ens.frame_size):
        diffs.append(f"frame size was {info.width}x{info.height}, now {ens.frame_size[1]}x{ens.frame_size[0]}")
    if diffs:
        raise ArtifactError(f"feedback {record.id} was recorded with other models ({'; '.join(diffs)}); `cli.py feedback undo {record.id}` or record it again")
    cut = TubeCutter.for_config(ens.regions, ens.cfg, info.codec)
    return np.concatenate([cut(f) for _, f in iter_frames_file(record.stretch)], axis=1), info.fps


@dataclass
class UpdateResult:
    version: int
    records: list[str]
    changed: dict[str, float]  # region -> by how much its absorbed cells' z are divided while they move as the stretches did
    checks: dict[str, dict[str, float]]  # "before"/"after": held-out normal flagged, faster played caught
    seconds: float
    manifest: Path | None = None
    cells: dict[str, list[int]] = field(default_factory=dict)  # region -> [cells absorbed, cells in all]

    def some_cells(self, rid: str) -> str:
        """"N of its K cells" where region ``rid`` absorbed only some of its cells, else "" (all of it, or nothing)."""
        n, K = self.cells.get(rid, (0, 0))
        return f"{n} of its {K} cells" if 0 < n < K else ""

    def summary(self) -> str:
        """One line for the operator, the same in the CLI and the web app: the version, the stretches, and what changed
        in each region (some of its cells or all of it, and by how much their scores are divided)."""

        def how(rid: str, f: float) -> str:
            if some := self.some_cells(rid):
                return f"{rid} ({some} score /{f:g} while they move as the stretch did)"
            return f"{rid} (scores /{f:g} while it moves as the stretch did)"

        changed = ", ".join(how(rid, f) for rid, f in self.changed.items()) or "none (the stretches raise no alarm already)"
        return f"models version {self.version} absorbs {len(self.records)} stretch(es) in {self.seconds:.1f} s; regions changed: {changed}"


def _checks(dets: list[RegionDetector], normal: dict[str, list[RegionTube]], threshold: float) -> dict[str, float]:
    """The models' own checks on their regions' held-out normal frames: the share flagged, and, played three times
    faster (the flow tripled), the share caught."""
    flagged, caught, total = 0, 0, 0
    for det in dets:
        tubes = normal[det.region.region_id]
        masks = validation_masks([len(x.tube) for x in tubes], det.cfg.train.val_block_frames, det.cfg.train.val_fraction)
        for x, m in zip(tubes, masks):
            if not m.any():
                continue
            fast = np.clip(FLOW_ZERO + 3.0 * (x.tube.astype(np.float32) - FLOW_ZERO), 0, 255).astype(np.uint8) if det.cfg.tube_content == "flow" else x.tube
            flagged += int((det.decision_function(x.tube)[m] > threshold).sum())
            caught += int((det.decision_function(fast)[m] > threshold).sum())
            total += int(m.sum())
    return {"held_out_normal_flagged": flagged / max(total, 1), "three_times_faster_caught": caught / max(total, 1)}


def update_models(work: str | Path, device: str = "cpu", epochs: int = 3, jobs: int = 0, stop: threading.Event | None = None) -> UpdateResult:
    """Make the models that have absorbed every recorded stretch (see the module doc); returns what changed."""
    t0 = time.perf_counter()
    wd = WorkDir(work)
    device = resolve_device(device)
    current, models = _models_of(wd.root)
    if current.version == 0:  # the trained models: kept as version 0 before the first update
        write_json(models / "versions" / "manifest.v0.json", current.manifest)
    base = Ensemble.load(models, device=device, manifest_path=models / "versions" / "manifest.v0.json")
    records = list_feedback(wd.root)
    signature = _base_signature(models, base.cfg)
    ids = [r.id for r in records]
    if not ids and current.version == 0:
        log.info("feedback: nothing recorded, the trained models stay in use")
        return UpdateResult(0, [], {}, {}, time.perf_counter() - t0)
    if current.version and current.manifest.get("feedback", {}).get("records") == ids and current.manifest["feedback"].get("base") == signature:
        log.info("feedback: version %d already holds every recorded stretch", current.version)
        held = current.manifest["feedback"]
        return UpdateResult(current.version, ids, held.get("changed", {}), {}, time.perf_counter() - t0, cells=held.get("cells", {}))
    version = max([current.version, *_versions(models)]) + 1
    threshold = base.threshold_
    marked: dict[str, list[RegionTube]] = {rid: [] for rid in base.region_ids}
    touched: set[str] = set()
    for r in records:
        tubes, fps = _stretch_tubes(r, base)
        session = ScoringSession(base, fps)
        n = tubes.shape[1]
        scored = [session.score(Prepared(tubes, None, np.full(n, "", dtype=object)), np.arange(n) / fps), session.flush()]
        region_z = np.concatenate([s.region_z for s in scored if len(s)])
        for j, rid in enumerate(base.region_ids):
            if region_z[:, j].max() > SETTLE * threshold:
                touched.add(rid)
            T = base.cfg.cuboids.clip_length_in_frames
            marked[rid].append(RegionTube(f"feedback:{r.id}", tubes[j], window_starts(tubes.shape[1], T, 1), fps))
    normal = {rid: load_region(wd.cuboids, rid, base.cfg)[0] for rid in sorted(touched)}
    by_id = {d.region.region_id: d for d in base.detectors}
    stamp = {"base": signature, "records": ids}

    def absorb(rid: str) -> tuple[str, str, RegionDetector]:
        name = f"{rid}.v{version}.pt"
        path = models / name
        if path.exists():  # a killed update's region, already absorbed for these very records
            done = RegionDetector.load(path, base.cfg, device)
            if {k: v for k, v in getattr(done, "feedback_", {}).items() if k != "settled"} == stamp:
                return rid, name, done
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        new = by_id[rid].absorbed(marked[rid], normal[rid], threshold, epochs, device)
        new.feedback_ = {**stamp, "settled": float(new.absorbed_.factor)}
        new.save(path, tube_files(wd.cuboids, rid))
        return rid, name, new

    workers, threads = plan_workers(max(len(touched), 1), jobs, device)
    with torch_threads(threads):
        done = Parallel(n_jobs=workers, backend="threading")(delayed(absorb)(rid) for rid in sorted(touched))
    checkpoints = {rid: name for rid, name, _ in done}
    changed = {rid: round(float(d.absorbed_.factor), 2) for rid, _, d in done}
    K = base.grid_cells**2
    cells = {rid: [K if d.absorbed_.cells is None else len(d.absorbed_.cells), K] for rid, _, d in done if d.absorbed_.factor != 1.0}
    new_dets = [RegionDetector.load(models / checkpoints[rid], base.cfg, device) for rid in sorted(touched)]
    checks = {"before": _checks([by_id[rid] for rid in sorted(touched)], normal, threshold), "after": _checks(new_dets, normal, threshold)}
    base_checkpoints = {d.region.region_id: e["checkpoint"] for d, e in zip(base.detectors, base.manifest["regions"])}
    manifest = write_manifest(models, base.cfg, {**base_checkpoints, **checkpoints}, version, threshold=threshold,
                              feedback={"base": signature, "records": ids, "changed": changed, "checks": checks, "cells": cells})  # fmt: skip
    return UpdateResult(version, ids, changed, checks, time.perf_counter() - t0, manifest, cells)


def _versions(models: Path) -> list[int]:
    return sorted(int(p.stem.split(".v")[1]) for p in (models / "versions").glob("manifest.v*.json"))


def rollback(work: str | Path, to: int | None = None) -> int:
    """Put the version before the one in use (or version ``to``; 0: the trained models) back in use; returns it."""
    models = WorkDir(work).models
    current = read_json(models / "manifest.json")
    now = int(current.get("version", 0))
    older = [v for v in _versions(models) if v < now] if to is None else [v for v in _versions(models) if v == to]
    if not older:
        raise UserError(f"{models}: version {now} is the first; there is nothing to roll back to" if to is None else f"{models}: no version {to}")
    back = read_json(models / "versions" / f"manifest.v{older[-1]}.json")
    write_json(models / "manifest.json", {**back, "rolled_back_from": now, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return older[-1]

