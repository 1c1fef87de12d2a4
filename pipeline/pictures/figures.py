"""Figures (matplotlib, Agg backend): arrays in, pictures out; nothing here reads a work folder.

``frame_figure``: a frame with its anomaly map overlaid (inferno colormap, in
the units of the cell scores, transparent below half the alarm threshold) and
beside it the frame with the region grid, each region labelled with its score
and outlined in red when above the threshold. ``timeline_figure``: the regions
x time matrix of z under the frame score with its threshold and the flagged
(and, given labels, the truly anomalous) frames shaded. ``curves_figures``:
ROC and precision-recall. ``confusion_figure``, ``attention_figure``: the
supervised classifier's. ``save_figure`` writes any of them atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from cuboid_ad.core.arrays import runs  # noqa: E402
from cuboid_ad.core.artifacts import atomic_path  # noqa: E402
from cuboid_ad.core.frames import measured_fps  # noqa: E402
from cuboid_ad.core.grid import region_cells  # noqa: E402
from cuboid_ad.pipeline.media.decode import decode_frames  # noqa: E402


def map_range(threshold: float) -> tuple[float, float]:
    """Where an anomaly map is drawn: from half the alarm threshold (transparent below) to twice it (the colour scale's top)."""
    return 0.5 * threshold, 2.0 * threshold


def pick_frames(score: np.ndarray, anomalous: np.ndarray, n: int = 6, spacing: int = 10) -> list[int]:
    """Up to ``n`` highest-scoring frames (0-based), at least ``spacing`` apart; flagged frames only, if any."""
    pool = np.flatnonzero(anomalous) if anomalous.any() else np.arange(len(score))
    chosen: list[int] = []
    for i in pool[np.argsort(-score[pool], kind="stable")]:
        if all(abs(int(i) - j) >= spacing for j in chosen):
            chosen.append(int(i))
        if len(chosen) == n:
            break
    return sorted(chosen)


def _show(ax, frame: np.ndarray) -> None:
    if frame.shape[-1] == 1:
        ax.imshow(frame[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(frame)
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(fig, path: Path | None = None, fmt: str = "png") -> Path | bytes:
    """Write a figure atomically to ``path``, or return its bytes when ``path`` is None; closes it."""
    try:
        if path is None:
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt)
            return buf.getvalue()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt)
        return Path(path)
    finally:
        plt.close(fig)


def frame_figure(frame: np.ndarray, amap: np.ndarray, boxes: np.ndarray, region_ids: list[str], z: np.ndarray, threshold: float, title: str):
    """One frame: overlay of the anomaly map | region grid with z."""
    H, W = amap.shape
    fig, (a, b) = plt.subplots(1, 2, figsize=(2 * 4.2 * W / max(H, W) + 1.2, 4.2 * H / max(H, W) + 0.9), dpi=110, layout="constrained")
    _show(a, frame)
    lo, hi = map_range(threshold)
    shown = np.ma.masked_less(amap, lo)
    im = a.imshow(shown, cmap="inferno", norm=Normalize(0, hi), alpha=0.65, interpolation="bilinear")
    bar = fig.colorbar(im, ax=a, shrink=0.8, label="cell score (z)")
    bar.ax.axhline(threshold, color="red", lw=1.5)
    a.set_title("anomaly map")
    _show(b, frame)
    # thin: each region's cell (overlaps split down the middle); thick red: the whole box of a region above threshold
    cells = region_cells(boxes, H, W)
    for (top, left, h, w), rid, zi in zip(cells, region_ids, z):
        b.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, lw=0.8, ec="white", alpha=0.9))
        b.text(left + w / 2, top + h / 2, f"{rid}\n{zi:.1f}", ha="center", va="center", fontsize=7, color="white",
               bbox={"facecolor": "red" if zi > threshold else "black", "alpha": 0.55, "pad": 1.5, "lw": 0})
    for (top, left, h, w), zi in zip(boxes, z):
        if zi > threshold:
            b.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, lw=2.2, ec="red", alpha=0.9))
    b.set_title(f"regions: score (red: above {threshold:.1f})")
    fig.suptitle(title, fontsize=10)
    return fig


def _symlog_score_axis(ax, score: np.ndarray, threshold: float) -> None:
    """Linear up to twice the threshold, decades above it; ticks at 0, the threshold and the decades only.

    matplotlib's default symlog ticks crowd 0 and +-1 together and pad the axis
    down to empty negative decades, although z rarely falls below -3.
    """
    linthresh = 2 * threshold
    ax.set_yscale("symlog", linthresh=linthresh)
    top = float(score.max())
    decades = [10.0**k for k in range(1, int(np.ceil(np.log10(top))) + 1) if 10.0**k > linthresh]
    ax.yaxis.set_major_locator(FixedLocator([0.0, threshold, *decades]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))  # the threshold to 3 digits, decades as 10, 100, ...
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_ylim(min(float(score.min()), 0.0) - 0.5, top * 1.5)


def frame_spans(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each frame sits on a time axis: from half an interval before its time to half after
    (the median interval, so that a recording's gap stays a gap). Returns (starts, ends)."""
    times = np.asarray(times, np.float64)
    half = 0.5 / measured_fps(times, 1.0)
    return times - half, times + half


def timeline_figure(
    region_z: np.ndarray, score: np.ndarray, anomalous: np.ndarray, region_ids: list[str], times: np.ndarray, threshold: float,
    truth: np.ndarray | None = None, title: str = "",
):
    """The regions x time matrix of scores under the frame score, on the frames' own times; returns the figure and its two axes."""
    n, R = region_z.shape
    fig, (top, mat) = plt.subplots(2, 1, figsize=(10, 2.2 + 0.22 * R), dpi=110, sharex=True, height_ratios=[1, max(1.2, R / 6)], layout="constrained")
    top.plot(times, score, lw=1, color="black", label="frame score")
    top.axhline(threshold, color="red", lw=1, ls="--", label=f"threshold ({threshold:.1f})")
    starts, ends = frame_spans(times)
    _shade(top, anomalous, starts, ends, "red", 0.15, "flagged")
    if truth is not None:
        _shade(top, truth, starts, ends, "tab:blue", 0.15, "ground truth")
    if score.size and score.max() > 10 * threshold:  # one huge peak would flatten the rest
        _symlog_score_axis(top, score, threshold)
    top.set_ylabel("score (z)")
    top.legend(loc="upper left", fontsize=7, ncols=4)
    vmax = max(2 * threshold, float(np.percentile(region_z, 99.5)) if region_z.size else 1.0)
    # one column per frame at its own time; where the recording has a gap, an empty column spans it
    edges, columns = [starts[0]] if n else [0.0], []
    for i in range(n):
        if i and starts[i] > edges[-1] + 1e-9:
            columns.append(np.full(R, np.nan))
            edges.append(starts[i])
        columns.append(region_z[i])
        edges.append(ends[i] if i == n - 1 else max(min(ends[i], starts[i + 1]), edges[-1]))
    grid = np.ma.masked_invalid(np.array(columns).T) if columns else np.zeros((R, 0))
    im = mat.pcolormesh(np.array(edges), np.arange(R + 1) - 0.5, grid, cmap="magma", vmin=0, vmax=vmax, shading="flat")
    mat.set_ylim(R - 0.5, -0.5)
    mat.set_yticks(range(R), region_ids, fontsize=7)
    mat.set_xlabel("time (s)")
    mat.set_ylabel("region")
    fig.colorbar(im, ax=mat, label="z")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig, (top, mat)


def curves_figures(labels: np.ndarray, scores: np.ndarray, flagged: np.ndarray, title: str = ""):
    """ROC and precision-recall curves of pooled frame scores, the operating point at the threshold marked."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    labels = labels.astype(bool)
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    op_fpr = (flagged & ~labels).sum() / max((~labels).sum(), 1)
    op_tpr = (flagged & labels).sum() / max(labels.sum(), 1)
    op_prec = (flagged & labels).sum() / max(flagged.sum(), 1)
    roc_fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=110, layout="constrained")
    ax.plot(fpr, tpr, lw=1.5, label=f"frame scores (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="chance")
    ax.plot([op_fpr], [op_tpr], "o", color="red", label="at the threshold")
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", xlim=(0, 1), ylim=(0, 1.01), title=f"ROC {title}".strip())
    ax.legend(loc="lower right", fontsize=8)
    pr_fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=110, layout="constrained")
    ax.plot(recall, precision, lw=1.5, label="frame scores")
    ax.axhline(labels.mean(), color="grey", lw=0.8, ls=":", label=f"chance ({labels.mean():.2f})")
    ax.plot([op_tpr], [op_prec], "o", color="red", label="at the threshold")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), title=f"precision-recall {title}".strip())
    ax.legend(loc="lower left", fontsize=8)
    return roc_fig, pr_fig


def _shade(ax, flags: np.ndarray, starts: np.ndarray, ends: np.ndarray, color: str, alpha: float, label: str) -> None:
    for k, (a, b) in enumerate(runs(flags)):
        ax.axvspan(starts[a], ends[b - 1], color=color, alpha=alpha, lw=0, label=label if k == 0 else None)


def frame_title(name: str, i: int, time_s: float, score: float, anomalous: bool, streams: str = "") -> str:
    """``name  frame N (t s)  score s [ANOMALOUS]`` for 0-based frame ``i`` at ``time_s``, and ``streams`` on a second line."""
    head = f"{name}  frame {i + 1} ({time_s:.1f} s)  score {score:.2f}" + ("  ANOMALOUS" if anomalous else "")
    return head + (f"\n{streams}" if streams else "")


def streams_text(region_z: np.ndarray, stream_z: np.ndarray, region_ids: list[str], streams: list[str]) -> str:
    """Which stream fired in the frame's strongest region: ``r1c2: reconstruction z 3.1, novelty z 7.2``
    (``stream_z``: the frame's ``(R, S)`` stream z, ``streams``: their names)."""
    j = int(np.argmax(region_z))
    return f"{region_ids[j]}: " + ", ".join(f"{name} z {z:.1f}" for name, z in zip(streams, stream_z[j]))


def confusion_figure(confusion: np.ndarray, classes: list[str], title: str = ""):
    """The confusion matrix of a classifier (rows: truth, columns: prediction), counts and row shares."""
    K = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 * K + 2.4, 1.0 * K + 1.8), dpi=110, layout="constrained")
    share = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(K):
        for j in range(K):
            ax.text(j, i, f"{confusion[i, j]}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=8, color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(K), classes, rotation=30, ha="right")
    ax.set_yticks(range(K), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return fig


def attention_overlay(frame: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """A classifier's attention map ``(h', w')`` in (0, 1) stretched over a frame ``(H, W, C)``: float ``(H, W)``, bilinear."""
    import torch
    import torch.nn.functional as F

    a = torch.from_numpy(np.ascontiguousarray(attention, dtype=np.float32))[None, None]
    return F.interpolate(a, size=frame.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()


def attention_figure(frame: np.ndarray, attention: np.ndarray, probs: np.ndarray, classes: list[str], title: str):
    """One frame: the frame | where the classifier looked (its attention, scaled to the frame's own range), with the class probabilities."""
    H, W = frame.shape[:2]
    fig, (a, b) = plt.subplots(1, 2, figsize=(2 * 4.2 * W / max(H, W) + 1.2, 4.2 * H / max(H, W) + 0.9), dpi=110, layout="constrained")
    _show(a, frame)
    a.set_title(", ".join(f"{c} {p:.2f}" for c, p in zip(classes, probs)), fontsize=8)
    _show(b, frame)
    amap = attention_overlay(frame, attention)
    lo, hi = float(attention.min()), float(attention.max())
    im = b.imshow(amap, cmap="viridis", norm=Normalize(lo, hi if hi > lo else lo + 1e-6), alpha=0.55, interpolation="bilinear")
    fig.colorbar(im, ax=b, shrink=0.8, label="attention")
    b.set_title("where the classifier looked")
    fig.suptitle(title, fontsize=10)
    return fig


def attention_figures(result, cfg, stream: int, out_path: Path, n: int = 6) -> list[Path]:
    """PNGs of the ``n`` frames of a classified clip most likely not normal, at least a second apart (``pipeline.supervise.Classified``)."""
    p_odd = 1.0 - result.probabilities[:, 0]
    wanted = pick_frames(p_odd, result.predicted != 0, n, spacing=max(1, int(round(result.fps))))
    frames = decode_frames(result.source, cfg, wanted, stream)
    written = []
    for i in wanted:
        k = int(result.predicted[i])
        title = f"{result.source.name}  frame {i + 1}  {result.times[i]:.1f} s  {result.classes[k]} ({result.probabilities[i, k]:.2f})"
        fig = attention_figure(frames[i], result.attention[i], result.probabilities[i], result.classes, title)
        written.append(save_figure(fig, Path(out_path) / f"frame_{i + 1:06d}.png"))
    return written
