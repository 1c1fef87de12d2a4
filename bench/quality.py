"""Detection-quality benchmark: the whole chain on a labelled dataset, beside two no-learning floors.

    python -m bench.quality --data ../shared/datasets/ucsd-ped2 --work work/ped2 [--config C | --preset P]

Trains on DATA/train only (models and thresholds), evaluates on DATA/test
against DATA/labels.json, and prints one table: pooled frame AUC of raw
scores (headline), per-clip min-max normalised AUC (labelled), mean per-clip
AUC, AP, EER, accuracy, confusion matrix and false-alarm rate at the
threshold, wall time of each stage, scoring fps, commit and config. The same
for the no-learning ``motion`` and ``speed`` baselines (see bench.motion).
Everything also goes to WORK/bench.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import time
from pathlib import Path

import joblib

from bench.motion import BASELINES, Baseline
from core.config import load_config, to_toml
from core.labels import frame_labels, load_labels
from core.workdir import WorkDir
from ensemble.metrics import frame_metrics
from pipeline.evaluate import evaluate
from pipeline.extract import extract_folder
from pipeline.ffmpeg_io import list_clips
from pipeline.slice import slice_folder
from pipeline.train import train_ensemble


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def baseline_metrics(name: str, data: Path, cfg) -> dict:
    t0 = time.perf_counter()
    model = Baseline(cfg, BASELINES[name]).fit(data / "train")
    labels = load_labels(data / "labels.json")
    clips = {}
    for p in list_clips(data / "test"):
        s = model.score(p)
        clips[p.stem] = (frame_labels(*labels[p.stem]), s, s > cfg.score.threshold_sigma)
    m = frame_metrics(clips)
    m["seconds"] = round(time.perf_counter() - t0, 1)
    return m


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
    return {"model": metrics, "stage_seconds": {k: round(v, 1) for k, v in times.items()}}


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
        ("AUC mean of per-clip", "auc_per_clip_mean"),
        ("average precision", "average_precision"),
        ("equal error rate", "equal_error_rate"),
    ]:
        rows.append(f"{label:28s} " + " ".join(f"{f(c[key]):>10s}" for c in cols))
    for label, key in [("accuracy at threshold", "accuracy"), ("false-alarm rate (normal)", "false_alarm_rate"), ("detection rate", "detection_rate")]:
        rows.append(f"{label:28s} " + " ".join(f"{f(c['at_threshold'][key]):>10s}" for c in cols))
    for label, src in zip(names, cols):
        t = src["at_threshold"]
        rows.append(f"confusion ({label}): TP {t['tp']}  FP {t['fp']}  TN {t['tn']}  FN {t['fn']}")
    s = result["stage_seconds"]
    rows.append("wall time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in s.items()) + f", total {sum(s.values()):.0f}")
    rows.append(f"scoring: {m['score_fps']:.1f} frames/s over {m['n_frames']} test frames ({result['cores']} cores)")
    rows.append(f"commit {result['commit']}, preset {result['config']['preset']}, config file {result['config_file']}")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--jobs", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="redo every stage (for timings)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cfg = load_config(args.config, args.preset)
    jobs = args.jobs or joblib.cpu_count()
    result = run(args.data, args.work, cfg, jobs, args.force)
    for name in BASELINES:
        result[name] = baseline_metrics(name, args.data, cfg)
    result.update(commit=commit(), config=cfg.to_dict(), config_file=str(args.config), cores=joblib.cpu_count(), data=str(args.data))
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.work / "config.toml").write_text(to_toml(cfg))
    print(table(result))


if __name__ == "__main__":
    main()
