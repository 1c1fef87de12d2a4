"""Speed and memory benchmark: ratios measured in one run, medians over several runs.

    python -m bench.speed --work work/bench/ucsd-ped2-default [--clip C] [--runs 5] [--long-minutes 30]

WORK must hold trained models (``make bench-ped2`` makes them). On one clip,
in this process, with every figure the median (min..max) of ``--runs`` runs:

- ffmpeg decode-only fps (``-f null``): the ceiling;
- end-to-end ``score`` (decode, slice, every region's model, fusion, writing
  scores.csv and maps.h5): fps and real-time factor;
- the models alone on the same windows, already in memory: their achieved
  GFLOP/s, beside a large float32 matrix multiply in torch on the same threads;
- overlap: end-to-end wall time / models-alone time;
- the naive path: a Python loop over windows and regions, one window at a
  time, same models, same clip (on its first frames);
- training: windows/s of one region alone and of the regions in parallel;
- memory: peak resident memory of ``score``, ``extract`` and ``cuboids`` in a
  fresh process on a long synthetic video against a 1-minute one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np
import torch
from joblib import Parallel, delayed

from bench.quality import commit
from cuboid_ad.core.config import Config
from cuboid_ad.core.progress import set_progress
from cuboid_ad.core.windows import gather_windows, window_starts
from cuboid_ad.core.workdir import WorkDir
from cuboid_ad.cuboids.slicing import TubeCutter, crop_flow, crop_regions, optical_flow
from cuboid_ad.ensemble.ensemble import Ensemble
from cuboid_ad.pipeline.media.decode import ffmpeg_exe, open_clip, read_frames
from cuboid_ad.pipeline.stages.score import score_video
from cuboid_ad.pipeline.stages.train import fit_region

ROOT = Path(__file__).resolve().parents[1]


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def fmt(s: dict, digits: int = 1) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}..{s['max']:.{digits}f})"


def decode_only_fps(clip: Path, n_frames: int) -> float:
    t0 = time.perf_counter()
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(clip), "-f", "null", "-"], check=True)
    return n_frames / (time.perf_counter() - t0)


def all_windows(ens: Ensemble, frames: np.ndarray) -> np.ndarray:
    """Every window the scorer runs on this clip, as it runs them: (R, n_windows, T', C, P, P)."""
    c, s = ens.cfg.cuboids, ens.cfg.score
    tubes = TubeCutter.for_config(ens.regions, ens.cfg)(frames)
    T = c.clip_length_in_frames
    starts = window_starts(len(frames), T, s.frames_between_clips)
    if starts[-1] + T < len(frames):
        starts = np.append(starts, len(frames) - T)  # the end-aligned window
    return np.stack([gather_windows(t, starts, T, ens.needs_previous) for t in tubes])


def flops_per_window(ens: Ensemble) -> float:
    """Floating-point operations of one region model on one window (torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    d = ens.detectors[0]
    T, P = ens.cfg.cuboids.clip_length_in_frames, ens.cfg.cuboids.patch_size
    x = torch.rand(1, ens.cfg.in_channels, T, P, P)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        d.model_(x)
    return float(counter.get_total_flops())


def models_alone_seconds(ens: Ensemble, windows: np.ndarray, batch: int = 64) -> float:
    t0 = time.perf_counter()
    for i in range(0, windows.shape[1], batch):
        for d, w in zip(ens.detectors, windows[:, i : i + batch]):
            d.window_maps(w)
    return time.perf_counter() - t0


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


@torch.no_grad()
def naive_fps(ens: Ensemble, frames: np.ndarray) -> float:
    """The straightforward path: for every window, for every region, crop, encode and run one window.

    A flow model's optical flow is computed once per frame of the clip, as any
    implementation would, and cropped per window and region.
    """
    c, s = ens.cfg.cuboids, ens.cfg.score
    T = c.clip_length_in_frames
    flow = ens.cfg.tube_content == "flow"
    t0 = time.perf_counter()
    source = optical_flow(frames[0], frames, c.flow_preset) if flow else frames
    errors = []
    for start in window_starts(len(frames), T, s.frames_between_clips):
        lo = max(start - 1, 0) if ens.needs_previous else start
        chunk = source[lo : start + T]
        if ens.needs_previous and start == 0:
            chunk = np.concatenate([chunk[:1], chunk])
        for region, det in zip(ens.regions, ens.detectors):
            crop = (crop_flow if flow else crop_regions)(chunk, [region], c.patch_size, c.blur_sigma)[0]  # (T', C, P, P)
            errors.append(det.window_maps(crop[None]))
    return len(frames) / (time.perf_counter() - t0)


def training_throughput(work: Path, cfg: Config, regions: list[str], windows: int) -> dict:
    """windows/s of ``len(regions)`` regions trained one at a time, then in parallel (threads)."""
    cfg = cfg.with_overrides(train={"epochs": 2, "max_windows_per_epoch": windows, "patience": 10})
    wd = WorkDir(work)
    out = {}
    cores = joblib.cpu_count()
    for label, jobs in (("one at a time", 1), ("parallel", min(cores, len(regions)))):
        tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
        torch.set_num_threads(max(1, cores // jobs))
        t0 = time.perf_counter()
        Parallel(n_jobs=jobs, backend="threading")(delayed(fit_region)(wd.cuboids, tmp, rid, cfg) for rid in regions)
        seconds = time.perf_counter() - t0
        torch.set_num_threads(cores)
        shutil.rmtree(tmp)
        # training windows per second; the validation passes and the calibration are in the time too
        out[label] = len(regions) * cfg.train.epochs * windows / seconds
    return out


def peak_rss_mb(args: list[str]) -> float:
    """Peak resident memory (MB) of ``python cli.py ARGS`` in a fresh process."""
    probe = "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if r.returncode == 0 else -1)"
    res = subprocess.run([sys.executable, "-c", probe, sys.executable, str(ROOT / "cli.py"), *args, "-q"], capture_output=True, text=True, cwd=ROOT)
    value = int(res.stdout.strip().splitlines()[-1])
    if value < 0:
        raise SystemExit(f"cli.py {' '.join(args)} failed:\n{res.stderr}")
    return value / 1024


def looped_video(clip: Path, minutes: float, out: Path) -> Path:
    """``clip`` looped to ``minutes`` of video (H.264, to keep the file small)."""
    subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(clip), "-t", f"{minutes * 60:g}",
         "-c:v", "libx264", "-preset", "ultrafast", "-crf", "20", "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )  # fmt: skip
    return out


def memory(models_work: Path, clip: Path, short_min: float, long_min: float, scratch: Path) -> dict:
    out = {}
    for label, minutes in (("short", short_min), ("long", long_min)):
        data = scratch / label / "data"
        (data / "train").mkdir(parents=True)
        video = looped_video(clip, minutes, data / "train" / "clip.mp4")
        work = scratch / label / "work"
        row = {"minutes": minutes, "frames": int(round(minutes * 60 * 10))}
        for stage in ("extract", "cuboids"):
            t0 = time.perf_counter()
            row[stage] = peak_rss_mb([stage, "--data", str(data), "--work", str(work), "--jobs", "1"])
            row[f"{stage}_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        row["score"] = peak_rss_mb(["score", str(video), "--work", str(models_work), "--out", str(scratch / label / "scored")])
        row["score_s"] = time.perf_counter() - t0
        out[label] = row
        shutil.rmtree(scratch / label)  # the long one's frames and maps take gigabytes
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="a work folder with trained models (and cuboids, for the training figures)")
    ap.add_argument("--clip", type=Path, default=ROOT.parent / "shared/datasets/ucsd-ped2/test/04.mkv")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--naive-frames", type=int, default=60, help="frames of the clip for the (slow) naive path")
    ap.add_argument("--long-minutes", type=float, default=30.0)
    ap.add_argument("--short-minutes", type=float, default=1.0)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-training", action="store_true")
    args = ap.parse_args()
    set_progress(False)
    torch.set_num_threads(joblib.cpu_count())
    wd = WorkDir(args.work)
    ens = Ensemble.load(wd.models)
    cfg = ens.cfg
    src = open_clip(args.clip, cfg.extract)
    frames = np.concatenate(list(read_frames(src, cfg.extract)))
    n = len(frames)
    windows = all_windows(ens, frames)
    fpw = flops_per_window(ens)
    total_flops = fpw * windows.shape[0] * windows.shape[1]
    runs: dict[str, list[float]] = {k: [] for k in ("decode_fps", "e2e_fps", "model_s", "e2e_s", "model_gflops", "matmul_gflops", "naive_fps")}
    scratch = Path(tempfile.mkdtemp(prefix="bench-speed-"))
    try:
        for r in range(args.runs):
            runs["decode_fps"].append(decode_only_fps(args.clip, n))
            t0 = time.perf_counter()
            res = score_video(args.clip, wd.models, scratch / "scored", ensemble=ens)
            e2e = time.perf_counter() - t0
            assert res.n_frames == n
            runs["e2e_s"].append(e2e)
            runs["e2e_fps"].append(n / e2e)
            m = models_alone_seconds(ens, windows)
            runs["model_s"].append(m)
            runs["model_gflops"].append(total_flops / m / 1e9)
            runs["matmul_gflops"].append(matmul_gflops())
            if r < 3:  # slow: three runs are enough
                runs["naive_fps"].append(naive_fps(ens, frames[: args.naive_frames]))
            print(f"run {r + 1}/{args.runs}: end-to-end {n / e2e:.0f} fps", file=sys.stderr)
        result: dict = {k: stats(v) for k, v in runs.items()}
        ratio = lambda a, b: stats([x / y for x, y in zip(runs[a], runs[b])])  # noqa: E731 - paired, run by run
        result["rtf"] = stats([f / src.fps for f in runs["e2e_fps"]])
        result["model_vs_matmul"] = ratio("model_gflops", "matmul_gflops")
        result["overlap"] = ratio("e2e_s", "model_s")
        result["vs_naive"] = stats([e / v for e, v in zip(runs["e2e_fps"], runs["naive_fps"])])
        result["e2e_vs_decode"] = ratio("e2e_fps", "decode_fps")
        result["flops_per_window"] = fpw
        result["windows"] = int(windows.shape[0] * windows.shape[1])
        if not args.skip_training:
            regions = cfg.cuboids.region_ids[:4]
            result["training"] = training_throughput(args.work, cfg, regions, 512)
        if not args.skip_memory:
            result["memory"] = memory(args.work, args.clip, args.short_minutes, args.long_minutes, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result.update(clip=str(args.clip), frames=n, fps=src.fps, cores=joblib.cpu_count(), torch_threads=torch.get_num_threads(),
                  commit=commit(), preset=cfg.preset, config=cfg.to_dict())  # fmt: skip
    (args.work / "speed.json").write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


def table(r: dict) -> str:
    rows = [
        f"clip {Path(r['clip']).name}: {r['frames']} frames at {r['fps']:g} fps; {r['cores']} cores; preset {r['preset']}; commit {r['commit']}",
        f"figures: median (min..max) of {r['e2e_fps']['runs']} runs (naive path: {r['naive_fps']['runs']})",
        f"ffmpeg decode only               {fmt(r['decode_fps'], 0):>24s} fps",
        f"score end to end                 {fmt(r['e2e_fps'], 0):>24s} fps",
        f"  real-time factor (target >= 3) {fmt(r['rtf'], 1):>24s} x",
        f"  / decode-only fps              {fmt(r['e2e_vs_decode'], 3):>24s}",
        f"models alone                     {fmt(r['model_gflops'], 1):>24s} GFLOP/s ({r['windows']} windows x {r['flops_per_window'] / 1e6:.0f} MFLOP)",
        f"matmul fp32 2048^2               {fmt(r['matmul_gflops'], 1):>24s} GFLOP/s",
        f"  models / matmul (target >= .5) {fmt(r['model_vs_matmul'], 3):>24s}",
        f"overlap: e2e / models (<= 1.15)  {fmt(r['overlap'], 3):>24s}",
        f"naive loop                       {fmt(r['naive_fps'], 1):>24s} fps",
        f"  e2e / naive (target >= 5)      {fmt(r['vs_naive'], 1):>24s} x",
    ]
    if "training" in r:
        t = r["training"]
        rows.append(f"training, 4 regions: one at a time {t['one at a time']:.0f} windows/s, in parallel {t['parallel']:.0f} windows/s "
                    f"(speed-up {t['parallel'] / t['one at a time']:.2f}x)")  # fmt: skip
    if "memory" in r:
        s, l = r["memory"]["short"], r["memory"]["long"]
        for stage in ("extract", "cuboids", "score"):
            rows.append(f"peak RSS {stage:8s}: {s[stage]:7.0f} MB at {s['minutes']:g} min, {l[stage]:7.0f} MB at {l['minutes']:g} min "
                        f"({l['frames']} frames): ratio {l[stage] / s[stage]:.2f} (target <= 1.2); {l[f'{stage}_s']:.0f} s")  # fmt: skip
    return "\n".join(rows)


if __name__ == "__main__":
    main()
