"""Cluster benchmark: Ped2 training on a Dask LocalCluster against the joblib default, then capacity on paper.

    python -m bench.cluster --data ../shared/datasets/ucsd-ped2 --work work/bench/cluster [--workers 2]

1. Extracts and slices DATA/train once (locally, skipped when up to date).
2. Trains every region twice from scratch with the same torch threads per
   region: in joblib's threading backend (the default of `train`, WORKERS
   regions at once) and as tasks on a LocalCluster of WORKERS processes of one
   thread (`train --scheduler`). Prints both wall times and their ratio
   (the overhead of Dask, goal <= 1.10), with and without the cluster's
   start-up, and whether the weights are bit-identical.
3. Scores DATA/test on the cluster and locally (frames/s, ratio).
4. From the measured seconds per region and scoring frames/s per worker,
   prints hours to train and to score a day of video for 10 / 100 / 1,000
   cameras on 1 / 10 / 100 workers; the assumptions are printed with it.
Everything also goes to WORK/bench-cluster.json.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path

import torch

from bench.quality import commit, dataset_arguments
from cuboid_ad.core.cluster import connect, local_cluster
from cuboid_ad.core.config import load_config
from cuboid_ad.core.progress import set_progress
from cuboid_ad.core.workdir import WorkDir
from cuboid_ad.ensemble.detector import read_checkpoint
from cuboid_ad.pipeline.stages.evaluate import evaluate
from cuboid_ad.pipeline.stages.extract import extract_folder
from cuboid_ad.pipeline.stages.slice import slice_folder
from cuboid_ad.pipeline.stages.train import train_ensemble

CAMERAS = (10, 100, 1000)
WORKERS = (1, 10, 100)


def identical(a: Path, b: Path, region_ids: list[str]) -> bool:
    for rid in region_ids:
        x, y = read_checkpoint(a / f"{rid}.pt"), read_checkpoint(b / f"{rid}.pt")
        if x["stats"] != y["stats"] or any(not torch.equal(t, y["state_dict"][k]) for k, t in x["state_dict"].items()):
            return False
    return True


def capacity(region_s: float, regions: int, score_fps_per_worker: float, fps: float, overhead: float) -> dict:
    """Hours for N cameras on W workers: a region (training) or an hour-long file (scoring) is one task, the
    tasks spread evenly in whole waves (a task is not split), times the measured Dask overhead."""
    rows = {}
    hour_file_s = 3600 * fps / score_fps_per_worker  # one worker scoring one camera's hour
    for n in CAMERAS:
        for w in WORKERS:
            train_h = math.ceil(n * regions / w) * region_s * overhead / 3600
            score_h = math.ceil(n * 24 / w) * hour_file_s * overhead / 3600
            rows[f"{n}x{w}"] = {"cameras": n, "workers": w, "train_hours": round(train_h, 2), "score_day_hours": round(score_h, 2)}
    return rows


def main() -> None:
    ap = dataset_arguments(__doc__)
    ap.add_argument("--workers", type=int, default=2, help="regions trained at once, in both runs")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    set_progress(sys.stderr.isatty())
    cfg = load_config(args.config, args.preset)
    wd = WorkDir(args.work)
    extract_folder(args.data / "train", wd.frames, cfg, n_jobs=args.workers)
    slice_folder(wd.frames, wd.cuboids, cfg, n_jobs=args.workers)
    regions = cfg.cuboids.region_ids
    local_models, cluster_models = wd.root / "models-joblib", wd.root / "models-dask"
    for p in (local_models, cluster_models):
        shutil.rmtree(p, ignore_errors=True)

    print(f"training {len(regions)} regions from scratch, {args.workers} at a time with 1 torch thread each ...", file=sys.stderr)
    t0 = time.perf_counter()
    train_ensemble(wd.cuboids, local_models, cfg, n_jobs=args.workers, threads=1)
    joblib_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    with local_cluster(args.workers) as address:
        startup_s = time.perf_counter() - t0
        with connect(address, [wd.root]) as cluster:
            t1 = time.perf_counter()
            train_ensemble(wd.cuboids, cluster_models, cfg, threads=1, cluster=cluster)
            dask_s = time.perf_counter() - t1
            t1 = time.perf_counter()
            on_cluster = evaluate(args.data / "test", args.data / "labels.json", cluster_models, wd.root / "eval-dask", cluster=cluster)
            cluster_score_s = time.perf_counter() - t1
    dask_total_s = time.perf_counter() - t0
    torch.set_num_threads(args.workers)
    t1 = time.perf_counter()
    here = evaluate(args.data / "test", args.data / "labels.json", local_models, wd.root / "eval-joblib")
    local_score_s = time.perf_counter() - t1

    same = identical(local_models, cluster_models, regions)
    # a region's whole task (loading its tubes, training, calibration), from the joblib run's wall time
    region_s = joblib_s * args.workers / len(regions)
    frames = on_cluster["n_frames"]
    per_worker_fps = frames / cluster_score_s / args.workers  # load imbalance between the workers included
    fps = 10.0  # Ped2's frame rate; a day of video is DAY_S x fps frames
    overhead = dask_s / joblib_s
    result = {
        "commit": commit(), "data": str(args.data), "workers": args.workers, "regions": len(regions),
        "train_seconds": {"joblib": round(joblib_s, 1), "dask": round(dask_s, 1), "dask_with_startup": round(dask_total_s - cluster_score_s, 1),
                          "cluster_startup": round(startup_s, 1)},
        "overhead_ratio": round(overhead, 3), "bit_identical": same, "region_seconds": round(region_s, 1),
        "score": {"frames": frames, "local_fps": round(frames / local_score_s, 1), "dask_fps": round(frames / cluster_score_s, 1),
                  "per_worker_fps": round(per_worker_fps, 1), "auc_local": here["auc_pooled_raw"], "auc_dask": on_cluster["auc_pooled_raw"]},
        "capacity": capacity(region_s, len(regions), per_worker_fps, fps, max(overhead, 1.0)),
    }  # fmt: skip
    (wd.root / "bench-cluster.json").write_text(json.dumps(result, indent=1) + "\n")
    t, s = result["train_seconds"], result["score"]
    print(f"train {len(regions)} regions, {args.workers} at a time x 1 torch thread ({result['commit']}):")
    print(
        f"  joblib threads {t['joblib']:.0f} s, Dask LocalCluster {t['dask']:.0f} s (+{t['cluster_startup']:.1f} s start-up): "
        f"overhead ratio {overhead:.3f} (goal <= 1.10); weights bit-identical: {'yes' if same else 'NO'}"
    )
    print(
        f"score {frames} test frames: here {s['local_fps']:.1f} frames/s ({args.workers} torch threads, one clip at a time), "
        f"on the cluster {s['dask_fps']:.1f} frames/s ({args.workers} clips at a time), {s['per_worker_fps']:.1f} per worker; "
        f"AUC {s['auc_local']:.4f} / {s['auc_dask']:.4f}"
    )
    print(
        f"\ncapacity on paper: hours to train (12 regions a camera, {region_s:.0f} s of one worker each, measured here) / "
        f"to score one day of video of every camera at {fps:g} fps, in hour-long files ({per_worker_fps:.0f} frames/s per worker measured here)"
    )
    print(f"{'cameras':>8s} " + " ".join(f"{f'{w} worker' + ('s' if w > 1 else ''):>22s}" for w in WORKERS))
    for n in CAMERAS:
        cells = [result["capacity"][f"{n}x{w}"] for w in WORKERS]
        print(f"{n:>8d} " + " ".join(f"{c['train_hours']:>9.1f} h / {c['score_day_hours']:>7.1f} h" for c in cells))
    print(
        "assumptions: each worker is one core of this machine's kind with 1 torch thread; every camera has Ped2's "
        "amount of normal training video and frame size; tasks spread evenly in whole waves (a region or an hour-long file "
        "is one task); the measured Dask overhead applies at every size; shared storage keeps up; no GPU."
    )


if __name__ == "__main__":
    main()
