"""Detection-quality benchmark: the whole chain on a labelled dataset, beside two no-learning floors.

    python -m bench.quality --data ../shared/datasets/ucsd-ped2 --work work/ped2 [--config C | --preset P]

Trains on DATA/train only (models and thresholds), evaluates on DATA/test
against DATA/labels.json, and prints one table: pooled frame AUC of raw
scores (headline), the literature's protocols (per-clip min-max normalised;
Gaussian smoothing of 3 frames over each clip; both need the clip's future,
so offline only), mean per-clip AUC, AP, EER, the false-alarm and detection
rates at the alarm threshold, the events (false alarms per minute of normal
video, labelled segments hit), wall time of each stage, scoring fps, commit and
config. The same for the no-learning ``motion`` and ``speed`` baselines (see
bench.motion).

Then the alarm's promise checked (``--holdout-clips N``, default 4): the chain is
trained again without the last N training clips, and the false events an hour
those normal clips raise are set beside the ones the models' alarm setting
promised (``score.false_events_per_hour``, ensemble.alarms). Everything also goes
to WORK/bench.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np

from bench.motion import BASELINES, fit_baseline
from cuboid_ad.core.config import load_config, to_toml
from cuboid_ad.core.labels import frame_labels, load_labels
from cuboid_ad.core.progress import set_progress
from cuboid_ad.core.workdir import WorkDir, clip_id
from cuboid_ad.ensemble.events import find_events
from cuboid_ad.ensemble.metrics import event_metrics, frame_metrics
from cuboid_ad.pipeline.media.decode import list_clips, open_clip
from cuboid_ad.pipeline.stages.evaluate import evaluate
from cuboid_ad.pipeline.stages.extract import extract_folder
from cuboid_ad.pipeline.stages.score import score_video
from cuboid_ad.pipeline.stages.slice import slice_folder
from cuboid_ad.pipeline.stages.train import train_ensemble


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def baseline_metrics(name: str, data: Path, cfg) -> dict:
    """A floor's frame and event metrics, its events made by the models' event rule."""
    t0 = time.perf_counter()
    model = fit_baseline(name, data / "train", cfg)
    labels = load_labels(data / "labels.json")
    clips, events = {}, {}
    for p in list_clips(data / "test"):
        s = model.decision_function(BASELINES[name](p, cfg))
        y = frame_labels(*labels[p.stem])
        fps = open_clip(p, cfg.extract).fps
        found = find_events(s > model.threshold_, s, s[:, None], np.arange(len(s)) / fps, ["frame"], model.threshold_,
                            cfg.score.min_event_seconds, cfg.score.event_gap_seconds, 1.0 / fps)
        clips[p.stem] = (y, s, s > model.threshold_)
        events[p.stem] = (y, found, fps)
    m = frame_metrics(clips)
    m["events"] = event_metrics(events)
    m["seconds"] = round(time.perf_counter() - t0, 1)
    return m


def holdout_check(data: Path, work: Path, cfg, jobs: int, n: int) -> dict:
    """Train without the last ``n`` training clips, score them: the false events an hour promised and observed."""
    clips = list_clips(data / "train")
    keep, held = clips[:-n], clips[-n:]
    sub = work / "data"
    (sub / "train").mkdir(parents=True, exist_ok=True)
    for old in (sub / "train").iterdir():
        old.unlink()
    for c in keep:
        (sub / "train" / c.name).symlink_to(c.resolve())
    wd = WorkDir(work)
    extract_folder(sub / "train", wd.frames, cfg, n_jobs=jobs)
    slice_folder(wd.frames, wd.cuboids, cfg, n_jobs=jobs)
    manifest = json.loads(train_ensemble(wd.cuboids, wd.models, cfg, n_jobs=jobs).read_text())
    scored = [score_video(c, wd.models, None, maps=False) for c in held]
    minutes = sum(r.duration for r in scored) / 60
    events = sum(len(r.events) for r in scored)
    return {"clips": [clip_id(c) for c in held], "minutes": minutes, "false_events": events, "observed_per_hour": events / minutes * 60,
            "promised_per_hour": manifest["alarms"]["estimated_false_events_per_hour"], "threshold": manifest["threshold"]}  # fmt: skip


def run(data: Path, work: Path, cfg, jobs: int, force: bool) -> dict:
    wd = WorkDir(work)
    times = {}
    t0 = time.perf_counter()
    extract_folder(data / "train", wd.frames, cfg, n_jobs=jobs, force=force)
    times["extract"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    slice_folder(wd.frames, wd.cuboids, cfg, n_jobs=jobs, force=force)
    times["cuboids"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    train_ensemble(wd.cuboids, wd.models, cfg, n_jobs=jobs, force=force)
    times["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = evaluate(data / "test", data / "labels.json", wd.models, wd.eval, cfg)
    times["evaluate"] = time.perf_counter() - t0
    alarms = json.loads((wd.models / "manifest.json").read_text())["alarms"]
    return {"model": metrics, "alarms": alarms, "stage_seconds": {k: round(v, 1) for k, v in times.items()}}


def table(result: dict) -> str:
    def f(v, d=4):
        return "n/a" if v is None else f"{v:.{d}f}"

    rows = []
    names = ["model"] + [n for n in BASELINES if n in result]
    cols = [result[n] for n in names]
    rows.append(f"{'':28s} " + " ".join(f"{n:>10s}" for n in names))
    m = result["model"]
    for label, key in [
        ("AUC raw, pooled (headline)", "auc_pooled_raw"),
        ("AUC per-clip min-max, pooled", "auc_pooled_minmax_per_clip"),
        ("AUC Gaussian σ=3 per clip, pooled", "auc_pooled_gaussian3"),
        ("AUC mean of per-clip", "auc_per_clip_mean"),
        ("average precision", "average_precision"),
        ("equal error rate", "equal_error_rate"),
    ]:
        rows.append(f"{label:28s} " + " ".join(f"{f(c[key]):>10s}" for c in cols))
    for label, key in [("false alarms, normal frames", "false_alarm_rate"), ("detected, anomalous frames", "detection_rate"),
                       ("accuracy at threshold", "accuracy")]:
        rows.append(f"{label:28s} " + " ".join(f"{f(c['at_threshold'][key]):>10s}" for c in cols))
    for label, key, d in [("false-alarm events / minute", "false_alarm_events_per_minute", 2), ("anomalous segments hit", "segments_hit_share", 3)]:
        rows.append(f"{label:28s} " + " ".join(f"{f(c['events'][key], d):>10s}" for c in cols))
    for label, src in zip(names, cols):
        t = src["at_threshold"]
        rows.append(f"confusion ({label}): TP {t['tp']}  FP {t['fp']}  TN {t['tn']}  FN {t['fn']}")
    s = result["stage_seconds"]
    rows.append("wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in s.items()) + f", total {sum(s.values()):.0f}")
    e = m["events"]
    rows.append(f"model: alarm threshold {m['threshold']:.2f} (false_alarm_rate {m['false_alarm_rate_target']:g} of held-out normal frames); "
                f"{e['n_events']} events, {e['false_alarm_events']} false over {e['normal_minutes']:.1f} normal minutes, "
                f"{e['segments_hit']} of {e['anomalous_segments']} labelled segments hit")
    rows.append(f"scoring: {m['score_fps']:.1f} frames/s over {m['n_frames']} test frames ({result['cores']} cores)")
    a = result["alarms"]
    rows.append(f"alarm setting: threshold {a['threshold']:.2f} (frames rule {a['frame_rate_threshold']:.2f}); promises "
                f"{a['estimated_false_events_per_hour']:.2g} false events an hour ({a['reach']})")  # fmt: skip
    h = result.get("holdout")
    if h:
        rows.append(f"alarm check: trained without {', '.join(h['clips'])}: promised {h['promised_per_hour']:.2g} false events an hour, "
                    f"observed {h['observed_per_hour']:.2g} on those clips ({h['false_events']} events in {h['minutes']:.1f} normal minutes never trained on)")  # fmt: skip
    rows.append(f"commit {result['commit']}, preset {result['config']['preset']}, config file {result['config_file']}")
    return "\n".join(rows)


def dataset_arguments(description: str) -> argparse.ArgumentParser:
    """The options every benchmark on a labelled dataset takes: --data, --work, --config, --preset."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--preset", default=None)
    return ap


def main() -> None:
    ap = dataset_arguments(__doc__)
    ap.add_argument("--jobs", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="redo every stage (for timings)")
    ap.add_argument("--holdout-clips", type=int, default=4, help="training clips left out to check the alarm's promise (0: no check)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    set_progress(sys.stderr.isatty())  # bars only on a terminal, not in a log file
    cfg = load_config(args.config, args.preset)
    jobs = args.jobs or joblib.cpu_count()
    result = run(args.data, args.work, cfg, jobs, args.force)
    for name in BASELINES:
        result[name] = baseline_metrics(name, args.data, cfg)
    if args.holdout_clips:
        result["holdout"] = holdout_check(args.data, args.work / "holdout", cfg, jobs, args.holdout_clips)
    result.update(commit=commit(), config=cfg.to_dict(), config_file=str(args.config), cores=joblib.cpu_count(), data=str(args.data))
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.work / "config.toml").write_text(to_toml(cfg))
    print(table(result))


if __name__ == "__main__":
    main()
