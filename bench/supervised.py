"""The supervised classifier on a labelled dataset, by clip-disjoint two-fold cross-validation, beside the unsupervised ensemble.

    python -m bench.supervised --data ../shared/datasets/ucsd-ped2 --work work/bench/ucsd-ped2-supervised \
        --eval work/bench/ucsd-ped2-default/eval

The labelled clips of DATA/labels.json are sorted and dealt alternately into two
folds. The classifier is trained (`supervise`, with DATA/train's clips as normal)
on one fold and classifies the other's clips, then the other way round, so that
every labelled frame gets an anomaly probability (1 - p(normal)) from a model that
never saw its clip. Those are compared on the same frames with the unsupervised
ensemble's scores from ``EVAL/`` (the `evaluate` output ``make bench-ped2`` leaves), and
with the two fused as ``score`` fuses them (``score.classifier_weight`` = 1).

``--select KEY=V1,V2`` (a [supervise] key) makes it nested: in each fold, a classifier is
trained for every value and the one with the best ROC AUC on that fold's own validation
clips is kept, so the choice never sees the other fold.

Printed: pooled frame AUC, average precision, the false-alarm and detection rates at
each one's operating point (the classifier: p > 0.5; the ensemble and the fusion:
its alarm threshold), the classifier's balanced accuracy, per-fold AUCs and the
training time. Everything also goes to WORK/bench.json.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from pathlib import Path

import joblib
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from bench.quality import commit, dataset_arguments
from cuboid_ad.core.config import load_config
from cuboid_ad.core.labels import frame_labels, load_labels
from cuboid_ad.core.progress import set_progress
from cuboid_ad.ensemble.fusion import fuse_classifier
from cuboid_ad.pipeline.stages.supervise import classify_video, supervise


def read_scores(eval_path: Path, clip_id: str) -> tuple[np.ndarray, np.ndarray]:
    """A clip's frame scores and flags from an `evaluate` run's ``<clip>/scores.csv``."""
    with open(eval_path / clip_id / "scores.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return np.array([float(r["score"]) for r in rows]), np.array([r["anomalous"] == "1" for r in rows])


def rates(y: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    return {"false_alarm_rate": float(flagged[~y].mean()), "detection_rate": float(flagged[y].mean())}


def main() -> None:
    ap = dataset_arguments(__doc__)
    ap.add_argument("--eval", type=Path, default=None, help="an `evaluate` output folder of the unsupervised ensemble on DATA/test")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--select", default=None, metavar="KEY=V1,V2", help="choose a [supervise] setting per fold on its own validation clips")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    set_progress(sys.stderr.isatty())
    cfg = load_config(args.config, args.preset)
    labels = load_labels(args.data / "labels.json")
    ids = sorted(labels)
    folds = [ids[0::2], ids[1::2]]
    key, values = None, [None]
    if args.select:
        key, _, listed = args.select.partition("=")
        default = getattr(cfg.supervise, key)
        values = [type(default)(v) for v in listed.split(",")]
    truth = {cid: frame_labels(*labels[cid]) for cid in ids}
    p_anom: dict[str, np.ndarray] = {}
    per_fold = []
    for k, held in enumerate(folds):
        fitted_on = [c for c in ids if c not in held]
        t0 = time.perf_counter()
        tried = {}
        for value in values:
            fold_cfg = cfg if key is None else cfg.with_overrides(supervise={key: value})
            work = args.work / f"fold-{k + 1}" / ("" if key is None else f"{key}-{value}")
            tried[value] = (supervise(args.data, work, fold_cfg, clips=fitted_on, device=args.device), work)
        chosen = max(tried, key=lambda v: tried[v][0]["auc_anomalous"] or 0.0)
        m, work = tried[chosen]
        seconds = time.perf_counter() - t0
        if key is not None:
            print(f"fold {k + 1}: {key} " + ", ".join(f"{v}: validation AUC {tried[v][0]['auc_anomalous'] or float('nan'):.4f}" for v in values) + f"; kept {chosen}", flush=True)
        for cid in held:
            r = classify_video(args.data / "test" / f"{cid}.mkv", work, None, args.device)
            p_anom[cid] = 1.0 - r.probabilities[:, 0]
        y = np.concatenate([truth[c] for c in held])
        p = np.concatenate([p_anom[c] for c in held])
        per_fold.append({"held_out": held, "trained_on": fitted_on, "auc": float(roc_auc_score(y, p)), "supervise_seconds": round(seconds, 1),
                         "epochs_run": m["epochs_run"], "best_epoch": m["best_epoch"], "chosen": chosen,
                         "validation_auc": {str(v): tried[v][0]["auc_anomalous"] for v in values}})  # fmt: skip
        print(f"fold {k + 1}: trained on {','.join(fitted_on)} in {seconds:.0f} s, held out {','.join(held)}: AUC {per_fold[-1]['auc']:.4f}", flush=True)
    y = np.concatenate([truth[c] for c in ids])
    p = np.concatenate([p_anom[c] for c in ids])
    at_half = rates(y, p > 0.5)
    rows = {"supervised (two-fold)": {"auc": float(roc_auc_score(y, p)), "ap": float(average_precision_score(y, p)), **at_half,
                                      "balanced_accuracy": 0.5 * (at_half["detection_rate"] + 1 - at_half["false_alarm_rate"])}}  # fmt: skip
    if args.eval is not None:
        eval_path = args.eval
        threshold = float(json.loads((eval_path / "metrics.json").read_text())["threshold"])
        scored = {cid: read_scores(eval_path, cid) for cid in ids}
        bad = [c for c in ids if len(scored[c][0]) != len(truth[c])]
        if bad:
            raise SystemExit(f"{eval_path}: frame counts differ from the labels for {', '.join(bad)}")
        s = np.concatenate([scored[c][0] for c in ids])
        f = np.concatenate([scored[c][1] for c in ids])
        rows["unsupervised ensemble"] = {"auc": float(roc_auc_score(y, s)), "ap": float(average_precision_score(y, s)), **rates(y, f)}
        fused = fuse_classifier(s, p, threshold, 1.0)
        rows["fused (classifier_weight 1)"] = {"auc": float(roc_auc_score(y, fused)), "ap": float(average_precision_score(y, fused)),
                                               **rates(y, fused > threshold)}  # fmt: skip
    print(f"\n{len(ids)} labelled clips, {len(y)} frames ({int(y.sum())} anomalous); every frame scored by a model that never saw its clip")
    print(f"{'':<30} {'AUC':>7} {'AP':>7} {'false alarms':>13} {'detected':>9}")
    for name, r in rows.items():
        print(f"{name:<30} {r['auc']:7.4f} {r['ap']:7.4f} {r['false_alarm_rate']:13.1%} {r['detection_rate']:9.1%}")
    print(f"supervised balanced accuracy at p > 0.5: {rows['supervised (two-fold)']['balanced_accuracy']:.4f}")
    result = {"rows": rows, "folds": per_fold, "commit": commit(), "config": cfg.to_dict(), "cores": joblib.cpu_count(), "data": str(args.data)}
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {args.work / 'bench.json'}")


if __name__ == "__main__":
    main()
