"""What real cameras do to normal footage: shake, night noise, blocky low-bitrate video, exposure and infrared
switches, flickering light, rain; false alarms and detection under each, beside the clean figures.

    python -m bench.nuisance --data ../shared/datasets/ucsd-ped2 --work work/bench/ucsd-ped2-default [--out DIR] [--only shake-2px,noise]

WORK must hold trained models (``make bench-ped2`` makes them). The corpus is made
from DATA's own clips (see :data:`NUISANCES` for every one's parameters): every
training clip (normal footage the models were fitted on: without a nuisance it
raises no event, so any event under a nuisance is the nuisance's) and every
labelled test clip, each decoded, changed frame by frame, and written again
(lossless, except the low-bitrate rows, which are H.264 at their bit rate, one
of them after night noise). The
corpus is cached in OUT/corpus/<nuisance>/ with the parameters it was made with.
Each clip is scored with the product's own ``score_video``; per nuisance the
table gives, on the normal clips, the share of frames flagged, the false
anomaly events a minute and the tamper events; on the labelled clips, the raw
pooled frame AUC (beside the clean one), the anomalous frames detected and the
labelled segments hit. Everything also goes to OUT/nuisance.json.

The parameters are this benchmark's; another corpus with others judges the
result (docs/experiments.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bench.quality import commit
from cuboid_ad.core.config import ExtractConfig
from cuboid_ad.core.labels import frame_labels, load_labels
from cuboid_ad.core.progress import set_progress
from cuboid_ad.core.workdir import WorkDir, clip_id
from cuboid_ad.ensemble.ensemble import Ensemble
from cuboid_ad.ensemble.metrics import event_metrics, frame_metrics
from cuboid_ad.pipeline.media.decode import ffmpeg_exe, list_clips, open_clip, read_frames
from cuboid_ad.pipeline.media.synthetic import write_video
from cuboid_ad.pipeline.stages.score import score_video

FPS = 10.0  # UCSD Ped2's rate, which the corpus keeps


@dataclass(frozen=True)
class Nuisance:
    name: str
    kind: str  # what `apply` does
    params: dict = field(default_factory=dict)
    what: str = ""


NUISANCES = [
    Nuisance("clean", "none", {}, "the clips as they are"),
    Nuisance("shake-2px", "shake", {"amplitude_px": 2.0, "hz": 1.0}, "camera shake: ±2 px at 1 Hz (a pole in a breeze)"),
    Nuisance("shake-4px", "shake", {"amplitude_px": 4.0, "hz": 3.0}, "camera shake: ±4 px at 3 Hz (a pole in the wind)"),
    Nuisance("noise-dusk", "noise", {"gain": 0.85, "sigma": 5.0}, "dusk: light down 15%, noise σ = 5 (the night filter turns on at 3)"),
    Nuisance("noise", "noise", {"gain": 0.7, "sigma": 10.0}, "night: light down 30%, Gaussian sensor noise σ = 10 grey levels a frame"),
    Nuisance("noise-late", "noise", {"gain": 0.6, "sigma": 14.0}, "late night: light down 40%, noise σ = 14"),
    Nuisance("noise-strong", "noise", {"gain": 0.5, "sigma": 18.0}, "deep night: light down 50%, noise σ = 18"),
    Nuisance("shake-night", "shake+noise", {"amplitude_px": 2.0, "hz": 1.0, "gain": 0.7, "sigma": 10.0}, "shake ±2 px at 1 Hz at night (σ = 10)"),
    Nuisance("shake-fast-night", "shake+noise", {"amplitude_px": 4.0, "hz": 3.0, "gain": 0.7, "sigma": 10.0}, "shake ±4 px at 3 Hz at night (σ = 10)"),
    Nuisance("bitrate-100k", "bitrate", {"kbps": 100}, "H.264 at 100 kb/s (0.12 bit a pixel a frame)"),
    Nuisance("bitrate-60k", "bitrate", {"kbps": 60}, "H.264 at 60 kb/s (0.07 bit a pixel a frame: a congested stream)"),
    Nuisance("noise-lossy", "noise+bitrate", {"gain": 0.7, "sigma": 10.0, "kbps": 100}, "night noise (σ = 10), then H.264 at 100 kb/s: a lossy night stream"),
    Nuisance("exposure", "exposure", {"gain": 0.6}, "an exposure step: 40% darker from the clip's middle on"),
    Nuisance("infrared", "infrared", {"gamma": 0.6, "contrast": 0.7}, "a day/infrared switch at the clip's middle: another tone curve, less contrast"),
    Nuisance("flicker", "flicker", {"depth": 0.12, "hz": 1.3}, "flickering light: brightness ±12% at 1.3 Hz"),
    Nuisance("rain", "rain", {"drops": 120, "length_px": 12, "brightness": 45}, "rain: 120 bright streaks a frame, a new draw every frame"),
]
# an unusual but harmless motion that repeats where nothing normally moves (a flag on the lawn): for bench.feedback
FLAG = Nuisance("flag", "flag", {"x": 46, "y": 34, "width": 14, "height": 22, "swing_px": 6.0, "hz": 0.8}, "a flag flapping on the lawn")
# a car's headlights sweeping across the lawn and bushes every few seconds: harmless, repeated, lasting motion
HEADLIGHTS = Nuisance("headlights", "headlights", {"y": 45, "width": 50, "height": 24, "gain": 70.0, "sweep_s": 2.0, "every_s": 6.0},
                      "headlights sweeping the lawn every 6 s")  # fmt: skip


def apply(n: Nuisance, frames: np.ndarray, seed: int) -> np.ndarray:
    """uint8 gray frames ``(n, H, W)`` with the nuisance ``n`` applied (``bitrate`` is applied when writing)."""
    rng = np.random.default_rng(seed)
    x = frames.astype(np.float32)
    T, H, W = frames.shape
    t = np.arange(T) / FPS
    p = n.params
    if n.kind in ("none", "bitrate"):
        return frames
    if n.kind == "shake+noise":  # the camera shakes, then its sensor adds the noise
        shaken = apply(Nuisance(n.name, "shake", {k: p[k] for k in ("amplitude_px", "hz")}), frames, seed)
        return apply(Nuisance(n.name, "noise", {k: p[k] for k in ("gain", "sigma")}), shaken, seed)
    if n.kind == "shake":
        phase = rng.uniform(0, 2 * np.pi, 2)
        dx = p["amplitude_px"] * np.sin(2 * np.pi * p["hz"] * t + phase[0])
        dy = p["amplitude_px"] * np.sin(2 * np.pi * p["hz"] * 1.3 * t + phase[1])
        out = np.empty_like(frames)
        for i in range(T):
            m = np.float32([[1, 0, dx[i]], [0, 1, dy[i]]])
            out[i] = cv2.warpAffine(frames[i], m, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return out
    if n.kind in ("noise", "noise+bitrate"):  # the sensor's noise (a bit rate is applied when writing)
        x = x * p["gain"] + rng.normal(0, p["sigma"], x.shape)
    elif n.kind == "exposure":
        x[T // 2 :] *= p["gain"]
    elif n.kind == "infrared":
        after = 255.0 * (x[T // 2 :] / 255.0) ** p["gamma"]
        x[T // 2 :] = (after - after.mean()) * p["contrast"] + after.mean()
    elif n.kind == "flicker":
        x *= (1 + p["depth"] * np.sin(2 * np.pi * p["hz"] * t))[:, None, None]
    elif n.kind == "flag":
        swing = p["swing_px"] * np.sin(2 * np.pi * p["hz"] * t + rng.uniform(0, 2 * np.pi))
        for i in range(T):
            x0 = int(round(p["x"] + swing[i]))
            stripes = 60.0 + 140.0 * ((np.arange(p["height"])[:, None] // 4 + np.arange(p["width"])[None, :] // 4) % 2)
            x[i, p["y"] : p["y"] + p["height"], x0 : x0 + p["width"]] = stripes[:, : max(0, min(p["width"], W - x0))]
    elif n.kind == "headlights":  # a soft bright spot crossing the frame left to right, then gone until the next car
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        phase = (t + rng.uniform(0, p["every_s"])) % p["every_s"]
        for i in np.flatnonzero(phase < p["sweep_s"]):
            cx = -p["width"] + (W + 2 * p["width"]) * phase[i] / p["sweep_s"]
            x[i] += p["gain"] * np.exp(-(((xx - cx) / (p["width"] / 2)) ** 2 + ((yy - p["y"]) / (p["height"] / 2)) ** 2))
    elif n.kind == "rain":
        for i in range(T):
            layer = np.zeros((H, W), np.float32)
            for _ in range(p["drops"]):
                y0, x0 = rng.integers(0, H), rng.integers(0, W)
                cv2.line(layer, (int(x0), int(y0)), (int(x0 + 3), int(y0 + p["length_px"])), float(p["brightness"]), 1, cv2.LINE_AA)
            x[i] += layer
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def decode(path: Path) -> np.ndarray:
    cfg = ExtractConfig()
    return np.concatenate(list(read_frames(open_clip(path, cfg), cfg)))[..., 0]


def write(n: Nuisance, frames: np.ndarray, path: Path) -> Path:
    if "kbps" not in n.params:
        return write_video(frames, path.with_suffix(".mkv"), FPS)
    import subprocess

    lossless = write_video(frames, path.with_name(f".{path.stem}.lossless.mkv"), FPS)
    out = path.with_suffix(".mp4")
    # one encoder thread: with several, x264's output at a bit rate differs from run to run
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(lossless), "-c:v", "libx264", "-threads", "1", "-b:v", f"{p_kbps(n)}k",
                    "-maxrate", f"{p_kbps(n)}k", "-bufsize", f"{2 * p_kbps(n)}k", "-pix_fmt", "yuv420p", str(out)], check=True)  # fmt: skip
    lossless.unlink()
    return out


def p_kbps(n: Nuisance) -> int:
    return int(n.params["kbps"])


def build(n: Nuisance, data: Path, out: Path) -> dict[str, list[Path]]:
    """The nuisance's corpus (cached): {"normal": clips, "test": clips}."""
    stamp = out / "corpus.json"
    want = {"nuisance": asdict(n), "data": str(data.resolve())}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return {part: sorted(p for p in (out / part).iterdir() if not p.name.startswith(".")) for part in ("normal", "test")}
    made: dict[str, list[Path]] = {"normal": [], "test": []}
    for part, src in (("normal", data / "train"), ("test", data / "test")):
        (out / part).mkdir(parents=True, exist_ok=True)
        for k, clip in enumerate(list_clips(src)):
            made[part].append(write(n, apply(n, decode(clip), seed=1000 * (part == "test") + k), out / part / clip_id(clip)))
    stamp.write_text(json.dumps(want))
    return made


def labelled_figures(clips: list[Path], models: Path, labels: dict, ens: Ensemble | None = None) -> tuple[dict, dict]:
    """Labelled clips scored with the models: their frame metrics and event metrics (``ensemble.metrics``)."""
    test = {clip_id(c): score_video(c, models, None, maps=False, ensemble=ens) for c in clips}
    data = {cid: (frame_labels(*labels[cid]), r.score, r.anomalous) for cid, r in test.items()}
    return frame_metrics(data), event_metrics({cid: (data[cid][0], r.events, r.fps) for cid, r in test.items()})


def measure(n: Nuisance, clips: dict[str, list[Path]], models: Path, labels: dict, ens: Ensemble) -> dict:
    t0 = time.perf_counter()
    normal = [score_video(c, models, None, maps=False, ensemble=ens) for c in clips["normal"]]
    n_normal = sum(r.n_frames for r in normal)
    minutes = sum(r.duration for r in normal) / 60
    false_events = sum(len(r.events) for r in normal)
    tamper = sum(len(getattr(r, "tampers", [])) for r in normal)
    fm, em = labelled_figures(clips["test"], models, labels, ens)
    return {
        "nuisance": asdict(n),
        "normal_frames": n_normal,
        "normal_minutes": round(minutes, 2),
        "normal_flagged": sum(int(r.anomalous.sum()) for r in normal) / max(n_normal, 1),
        "false_events": false_events,
        "false_events_per_minute": false_events / max(minutes, 1e-9),
        "tamper_events_normal": tamper,
        "auc": fm["auc_pooled_raw"],
        "detected": fm["at_threshold"]["detection_rate"],
        "false_alarm_rate_test": fm["at_threshold"]["false_alarm_rate"],
        "segments_hit": f"{em['segments_hit']} of {em['anomalous_segments']}",
        "seconds": round(time.perf_counter() - t0, 1),
    }


def table(rows: list[dict]) -> str:
    clean = next((r["auc"] for r in rows if r["nuisance"]["name"] == "clean"), None)
    out = [f"{'nuisance':14s} {'flagged':>8s} {'false ev/min':>12s} {'tamper':>6s} {'AUC':>7s} {'ΔAUC':>7s} {'detected':>8s} {'segments':>9s}   what"]
    for r in rows:
        d = "" if clean is None or r["auc"] is None else f"{r['auc'] - clean:+.4f}"
        out.append(f"{r['nuisance']['name']:14s} {r['normal_flagged']:8.1%} {r['false_events_per_minute']:12.2f} {r['tamper_events_normal']:6d} "
                   f"{r['auc']:7.4f} {d:>7s} {r['detected']:8.1%} {r['segments_hit']:>9s}   {r['nuisance']['what']}")  # fmt: skip
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="a work folder with trained models (make bench-ped2)")
    ap.add_argument("--out", type=Path, default=None, help="[default: WORK/../nuisance]")
    ap.add_argument("--only", default=None, help="comma-separated nuisance names (default: all)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    set_progress(sys.stderr.isatty())
    out = args.out or args.work.parent / "nuisance"
    models = WorkDir(args.work).models
    ens = Ensemble.load(models)
    labels = load_labels(args.data / "labels.json")
    wanted = [n for n in NUISANCES if args.only is None or n.name in args.only.split(",")]
    rows = []
    for n in wanted:
        clips = build(n, args.data, out / "corpus" / n.name)
        rows.append(measure(n, clips, models, labels, ens))
        print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    result = {"commit": commit(), "models": str(models.resolve()), "rows": rows}
    (out / "nuisance.json").write_text(json.dumps(result, indent=1) + "\n")
    print(table(rows))
    print(f"commit {result['commit']}, models {models}")


if __name__ == "__main__":
    main()
