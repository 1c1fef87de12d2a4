"""How the frame flag trades false alarms for detections as the threshold on the frame score rises.

    python -m bench.thresholds --data DATA --eval WORK/eval [--sigmas 5,10,15,20]

Reads the ``scores.csv`` that ``evaluate`` wrote for every clip of DATA/test
and, for each threshold k, prints the share of normal frames and of anomalous
frames whose frame score exceeds k, without re-scoring anything.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from cuboid_ad.core.labels import frame_labels, load_labels


def flag_rates(data: Path, eval_dir: Path, sigmas: list[float]) -> list[tuple[float, float, float]]:
    """(k, false-alarm rate on normal frames, detection rate on anomalous frames) for each k."""
    scores, labels = [], []
    for clip_id, (n_frames, ranges) in load_labels(data / "labels.json").items():
        with open(eval_dir / clip_id / "scores.csv", newline="") as f:
            scores.append(np.array([float(row["score"]) for row in csv.DictReader(f)]))
        labels.append(frame_labels(n_frames, ranges))
    s, y = np.concatenate(scores), np.concatenate(labels)
    return [(k, float(np.mean(s[~y] > k)), float(np.mean(s[y] > k))) for k in sigmas]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--eval", type=Path, required=True, help="the evaluate stage's output folder")
    ap.add_argument("--sigmas", default="5,10,15,20")
    args = ap.parse_args()
    print(f"{'k':>5s} {'false alarms':>13s} {'detected':>9s}")
    for k, fa, det in flag_rates(args.data, args.eval, [float(v) for v in args.sigmas.split(",")]):
        print(f"{k:5g} {fa:13.2f} {det:9.2f}")


if __name__ == "__main__":
    main()
