"""The supervised route, end to end: `supervise` (labelled clips in, a classifier out) and `classify` (a clip in, per-frame classes out).

Labels come from either

- ``DATA/classes/<name>/`` folders of clips, every frame of a clip of that class
  (multi-class; a ``normal`` folder is required and is class 0), or
- ``DATA/labels.json`` over ``DATA/test``'s clips, anomalous frame ranges against
  the rest (binary: ``normal``, ``anomalous``), with ``DATA/train``'s clips as
  normal too when ``supervise.include_train_clips``.

``WORK/classifier/`` holds ``model.pt`` (kind ``classifier``: weights, classes,
input size, the config, the clips it was fitted and validated on, the training
record), ``metrics.json`` and ``confusion.png`` (on the validation clips, which
are whole clips no training window came from) and, while training,
``model.partial.pt`` (the state after every epoch: a killed run resumes there).

``classify`` writes ``classes.csv`` (per frame: time, predicted class, every
class's probability), ``attention.h5`` (per frame, the attention map of the
window ending there) and, with ``heatmaps``, PNGs of the frames most likely
anomalous with the attention drawn over them.
"""

from __future__ import annotations

import csv
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from cuboid_ad.core.arrays import runs
from cuboid_ad.core.artifacts import atomic_path, check_stamp, new_folder, remove_stale_temporaries, source_signature, stamp, stamp_dict, write_json
from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import ArtifactError, InputError, UserError
from cuboid_ad.core.frames import measured_fps
from cuboid_ad.core.labels import frame_labels, load_labels
from cuboid_ad.core.progress import progress
from cuboid_ad.core.snapshots import load_partial, save_partial
from cuboid_ad.core.workdir import WorkDir, clip_id
from cuboid_ad.ensemble.fit import TrainingStopped
from cuboid_ad.ensemble.metrics import classification_metrics
from cuboid_ad.ensemble.supervised import (
    ClassifierStream,
    LabelledClip,
    build_classifier,
    fit_classifier,
    input_size,
    load_classifier,
    read_classifier,
    resize_frames,
    select_windows,
    split_clips,
)
from cuboid_ad.pipeline.media.decode import list_clips, open_clip, output_fps, read_frames, working_size

log = logging.getLogger(__name__)

NORMAL = "normal"


@dataclass(frozen=True)
class ClipSpec:
    """A labelled clip before decoding: its id, path, and either one class for every frame or labelled ranges."""

    clip_id: str
    path: Path
    label: int | None = None  # the class of every frame (class folders)
    ranges: tuple[int, list[tuple[int, int]]] | None = None  # (frame count, anomalous ranges) from labels.json


def find_labelled_clips(data_path: str | Path, cfg: Config, only: list[str] | None = None) -> tuple[list[str], list[ClipSpec]]:
    """The classes and labelled clips of ``data_path`` (see the module's doc); ``only``: keep just these of the labelled
    clips (DATA/train's normal clips stay)."""
    data_path = Path(data_path)
    classes_path = data_path / "classes"
    specs: list[ClipSpec] = []
    if classes_path.is_dir():
        names = sorted(p.name for p in classes_path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if NORMAL not in names:
            raise InputError(f"{classes_path}: needs a {NORMAL}/ folder of clips without incidents (class 0) beside {', '.join(names) or 'the others'}")
        classes = [NORMAL] + [n for n in names if n != NORMAL]
        for k, name in enumerate(classes):
            found = [ClipSpec(f"{name}/{clip_id(p)}", p, label=k) for p in list_clips(classes_path / name)]
            if not found:
                raise InputError(f"{classes_path / name}: holds no clips (video files or folders of images)")
            specs += found
    elif (data_path / "labels.json").is_file():
        classes = [NORMAL, "anomalous"]
        labels = load_labels(data_path / "labels.json")
        test = {clip_id(p): p for p in list_clips(data_path / "test")} if (data_path / "test").is_dir() else {}
        missing = sorted(set(labels) - set(test))
        if missing:
            raise InputError(f"{data_path / 'labels.json'}: labels clip(s) {', '.join(missing)} that {data_path / 'test'} does not hold")
        specs += _only([ClipSpec(cid, test[cid], ranges=labels[cid]) for cid in sorted(labels)], only, data_path)
        if cfg.supervise.include_train_clips and (data_path / "train").is_dir():
            specs += [ClipSpec(f"train/{clip_id(p)}", p, label=0) for p in list_clips(data_path / "train")]
    else:
        raise InputError(f"{data_path}: no labelled clips: give classes/<name>/ folders (one of them normal/) or labels.json with test/")
    if classes_path.is_dir():
        specs = _only(specs, only, data_path)
    if not specs:
        raise InputError(f"{data_path}: holds no labelled clips")
    return classes, specs


def _only(specs: list[ClipSpec], only: list[str] | None, data_path: Path) -> list[ClipSpec]:
    """The labelled clips named in ``only`` (all when None); an unknown name is refused."""
    if only is None:
        return specs
    unknown = sorted(set(only) - {s.clip_id for s in specs})
    if unknown:
        raise InputError(f"{data_path}: no labelled clip(s) {', '.join(unknown)}; known: {', '.join(s.clip_id for s in specs)}")
    return [s for s in specs if s.clip_id in only]


def decode_clip(path: Path, cfg: Config, size: tuple[int, int] | None, allow_damaged: bool = False) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """A clip's frames at the classifier's input ``size`` (None: from this clip), uint8 ``(n, C, h, w)``, their times, and the size."""
    src = open_clip(path, cfg.extract)
    if size is None:
        width, height = working_size(src, cfg.extract)
        size = input_size(height, width, cfg.supervise.frame_height)
    chunks, times = [], []
    for frames, stamps in read_frames(src, cfg.extract, 64, allow_damaged, with_times=True):
        chunks.append(resize_frames(frames, size))
        times.append(stamps)
    return np.concatenate(chunks), np.concatenate(times), size


def load_clips(specs: list[ClipSpec], cfg: Config, allow_damaged: bool = False) -> tuple[list[LabelledClip], tuple[int, int]]:
    """Decode every labelled clip at one input size (the first clip's aspect), each frame with its class."""
    clips, size = [], None
    for spec in progress(specs, desc="decode labelled clips", unit="clip"):
        frames, _, size = decode_clip(spec.path, cfg, size, allow_damaged)
        if spec.ranges is not None:
            n, ranges = spec.ranges
            if len(frames) != n:
                raise InputError(f"{spec.path}: decodes to {len(frames)} frames, labels.json says {n}")
            labels = frame_labels(n, ranges).astype(np.int64)
        else:
            labels = np.full(len(frames), spec.label, dtype=np.int64)
        if len(frames) < cfg.supervise.window_frames:
            raise InputError(f"{spec.path}: {len(frames)} frames, fewer than one window (supervise.window_frames = {cfg.supervise.window_frames})")
        clips.append(LabelledClip(spec.clip_id, frames, labels))
    return clips, size


def supervise(
    data_path: str | Path,
    work_path: str | Path,
    cfg: Config,
    clips: list[str] | None = None,
    device: str = "cpu",
    force: bool = False,
    allow_damaged: bool = False,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Train the classifier on the labelled clips of ``data_path`` into ``WORK/classifier``; returns its validation metrics.

    Up to date (same config, classes and clips): nothing is trained again. ``stop``, when set,
    ends training at the next batch; the last finished epoch is kept for the next run.
    """
    out = WorkDir(work_path).classifier
    classes, specs = find_labelled_clips(data_path, cfg, clips)
    signatures = {s.clip_id: source_signature(s.path) for s in specs}
    model_path, partial = out / "model.pt", out / "model.partial.pt"
    if not force and _up_to_date(model_path, cfg, classes, signatures):
        log.info("supervise: %s is up to date", model_path)
        return read_classifier(model_path)["metrics"]
    with new_folder(out):
        remove_stale_temporaries(out)
        if force:
            partial.unlink(missing_ok=True)
        labelled, size = load_clips(specs, cfg, allow_damaged)
        train_idx, val_idx = split_clips(labelled, cfg.supervise.val_fraction, cfg.supervise.seed)
        s = cfg.supervise

        def windows(idx):
            return [(i, select_windows(labelled[i], s.window_frames, s.frames_between_windows, s.ssim_threshold)) for i in idx]

        train_w, val_w = windows(train_idx), windows(val_idx)
        n_all = sum(len(range(s.window_frames - 1, len(labelled[i].frames), s.frames_between_windows)) for i in train_idx)
        log.info("supervise: %d classes, %d training clips (%d of %d windows kept by SSIM), %d validation clips",
                 len(classes), len(train_idx), sum(len(e) for _, e in train_w), n_all, len(val_idx))  # fmt: skip
        seen = np.unique(np.concatenate([labelled[i].labels[e] for i, e in train_w]))
        if len(seen) < 2:
            raise InputError(f"{data_path}: the training clips hold one class only ({classes[int(seen[0])]}); a classifier needs at least two")
        channels = labelled[0].frames.shape[1]
        model = build_classifier(s, channels, len(classes))
        record = {"config": cfg.to_json(), "classes": classes, "training_clips": signatures}
        resume = load_partial(partial, record)
        bar = progress(total=s.epochs, desc="supervise", unit="epoch", initial=0 if resume is None else resume["state"]["epoch"] + 1)
        if resume is not None:
            log.info("supervise: resumed after epoch %d", resume["state"]["epoch"] + 1)

        def on_epoch(state, snapshot):
            save_partial(partial, record, snapshot)
            bar.update(1)
            bar.set_postfix(val_loss=f"{state.val_loss[-1]:.3g}" if state.val_loss else "-", refresh=False)

        try:
            best, history = fit_classifier(model, labelled, train_w, val_w, len(classes), s, device, resume, on_epoch, (stop or threading.Event()).is_set)
        except TrainingStopped:
            raise KeyboardInterrupt from None
        finally:
            bar.close()
        model.load_state_dict(best)
        held = val_idx or train_idx
        metrics = _clip_metrics(model, [labelled[i] for i in held], classes, s.window_frames, size, device)
        metrics.update({"split": "validation clips" if val_idx else "training clips (too few clips to hold any out)",
                        "validation_clips": [labelled[i].clip_id for i in val_idx], "training_clips": [labelled[i].clip_id for i in train_idx],
                        "best_epoch": history.best_epoch + 1, "epochs_run": history.epoch + 1, "train_seconds": round(history.seconds, 1)})  # fmt: skip
        ck = {**stamp_dict("classifier", cfg), **record, "input_size": list(size), "channels": channels, "weights": best,
              "history": history.to_dict(), "metrics": metrics}  # fmt: skip
        with atomic_path(model_path) as tmp:
            torch.save(ck, tmp)
        write_json(out / "metrics.json", metrics)
        from cuboid_ad.pipeline.pictures.figures import confusion_figure, save_figure

        save_figure(confusion_figure(np.array(metrics["confusion"]), classes, f"{metrics['split']}: balanced accuracy {metrics['balanced_accuracy']:.3f}"),
                    out / "confusion.png")  # fmt: skip
        partial.unlink(missing_ok=True)
    return metrics


def _up_to_date(model_path: Path, cfg: Config, classes: list[str], signatures: dict) -> bool:
    try:
        ck = read_classifier(model_path, cfg)
    except UserError:
        return False
    return ck["classes"] == classes and ck["training_clips"] == signatures


def _clip_metrics(model, clips: list[LabelledClip], classes: list[str], window_frames: int, size, device: str) -> dict:
    """Per-frame metrics over whole clips: every frame, each by the window ending at it."""
    truth, probs = [], []
    for c in clips:
        stream = ClassifierStream(model, window_frames, size, device)
        p, _ = stream.push(c.frames.transpose(0, 2, 3, 1))
        truth.append(c.labels)
        probs.append(p)
    return classification_metrics(np.concatenate(truth), np.concatenate(probs), classes)


@dataclass
class Classified:
    """What `classify` found in a clip."""

    source: Path
    classes: list[str]
    times: np.ndarray  # (n,) seconds since the first frame
    probabilities: np.ndarray  # (n, K)
    attention: np.ndarray  # (n, h', w')
    fps: float
    segments: list[tuple[int, int, str, float]]  # (first, last) 0-based inclusive, class, mean probability
    out_path: Path | None = None

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


def classify_video(
    video_path: str | Path, work_path: str | Path, out_path: str | Path | None, device: str = "cpu", allow_damaged: bool = False, stream: int = 0,
    heatmaps: int = 0,
) -> Classified:
    """Per-frame class probabilities and attention maps of a clip with WORK's classifier; ``classes.csv`` and ``attention.h5``
    into ``out_path`` (None: nothing written), and ``heatmaps`` PNGs of its most anomalous frames."""
    ck, model = load_classifier(WorkDir(work_path).classifier / "model.pt", device=device)
    cfg: Config = ck["cfg"]
    size = tuple(ck["input_size"])
    src = open_clip(video_path, cfg.extract, stream)
    clf = ClassifierStream(model, cfg.supervise.window_frames, size, device)
    probs, maps, times = [], [], []
    with progress(total=src.n_frames_estimate or None, desc=f"classify {src.path.name}", unit="frame") as bar:
        for frames, stamps in read_frames(src, cfg.extract, 64, allow_damaged, with_times=True):
            p, a = clf.push(frames)
            probs.append(p)
            maps.append(a)
            times.append(stamps)
            bar.update(len(frames))
    fps = output_fps(src, cfg.extract)
    times_s = np.concatenate(times)
    result = Classified(src.path, ck["classes"], times_s, np.concatenate(probs), np.concatenate(maps), measured_fps(times_s, fps), [])
    result.segments = class_segments(result.predicted, result.probabilities, result.classes, max(1, int(round(cfg.score.min_event_seconds * result.fps))))
    if out_path is not None:
        out_path = Path(out_path)
        with new_folder(out_path):
            _write_classes(out_path / "classes.csv", result)
            with atomic_path(out_path / "attention.h5") as tmp, h5py.File(tmp, "w") as fh:
                fh.create_dataset("attention", data=result.attention.astype(np.float16), compression="gzip", compression_opts=1)
                fh.create_dataset("probabilities", data=result.probabilities.astype(np.float32))
                fh.create_dataset("time_s", data=times_s)
                stamp(fh.attrs, "attention", cfg, classes=",".join(result.classes), source_path=str(src.path.resolve()), stream=stream)
            if heatmaps:
                from cuboid_ad.pipeline.pictures.figures import attention_figures

                attention_figures(result, cfg, stream, out_path / "attention", heatmaps)
        result.out_path = out_path
    return result


def class_segments(predicted: np.ndarray, probs: np.ndarray, classes: list[str], min_frames: int) -> list[tuple[int, int, str, float]]:
    """Runs of one predicted class other than normal, at least ``min_frames`` long: (first, last, class, mean probability)."""
    out = []
    for k in range(1, len(classes)):
        for a, b in runs(predicted == k):
            if b - a >= min_frames:
                out.append((int(a), int(b - 1), classes[k], float(probs[a:b, k].mean())))
    return sorted(out)


def _write_classes(path: Path, r: Classified) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "time_s", "class", *(f"p_{c}" for c in r.classes)])
        for i, (t, k, p) in enumerate(zip(r.times, r.predicted, r.probabilities)):
            w.writerow([i + 1, f"{t:.3f}", r.classes[k], *(f"{v:.4f}" for v in p)])


def read_attention(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``attention.h5`` -> (classes, probabilities (n, K), attention (n, h', w'))."""
    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except OSError:
        raise ArtifactError(f"{path}: missing or unreadable; run `classify` again") from None
    with fh:
        check_stamp(dict(fh.attrs), "attention", path)
        classes = str(fh.attrs["classes"]).split(",")
        return classes, fh["probabilities"][:], fh["attention"][:].astype(np.float32)

