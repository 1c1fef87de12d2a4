"""Stage 6b, report: one clip scored and shown on one self-contained HTML page.

``report(VIDEO)`` writes into ``out_path``:

``report.html``
    no network needed: inline CSS and JS, plots inline (SVG and PNG as data),
    the video beside it. The score timeline over the regions x time matrix
    (threshold line, flagged frames shaded, ground truth shaded when labels
    are given; a click seeks the video), the side-by-side video, the anomalous
    events (click to seek), a gallery of the most anomalous frames, and a
    summary: thresholds, config, training data, processing speed.
``report.mp4``
    H.264, three panels per frame: input | reconstruction (what the models
    rebuild, from ``maps.h5``: see ``ensemble.detector.shown_reconstruction``) | anomaly map over
    the input with the region grid, regions above threshold outlined in red.
``scores.csv``, ``maps.h5``
    as written by ``score``.
``classes.csv``, ``attention.h5``
    when the work folder has a supervised classifier (`supervise`): as written by
    ``classify``; the page then also shows its segments and, over the gallery's
    frames, where it looked (its attention map).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.artifacts import atomic_path, open_h5
from core.config import to_toml
from core.errors import InputError, UserError
from core.grid import region_cells
from core.labels import frame_labels, load_labels
from core.progress import progress
from ensemble.anomaly_map import AnomalyMapper
from ensemble.ensemble import Ensemble
from pipeline.ffmpeg_io import ffmpeg_exe, open_clip, read_frames
from pipeline.heatmaps import (
    attention_figure, frame_figure, frame_title, map_range, pick_frames, save_figure, stream_detail, streams_text, timeline_figure,
)
from pipeline.score import ScoreResult, score_video
from pipeline.supervise import Classified, classifier_path, classify_video

log = logging.getLogger(__name__)

HEADER = 34  # pixels of caption (two lines) above the video's panels
MIN_PANEL_WIDTH = 320  # small working sizes are enlarged (nearest neighbour) to at least this


@dataclass(frozen=True)
class Report:
    html: Path
    video: Path
    result: ScoreResult


def clip_truth(labels_path: str | Path, clip_id: str, n_frames: int) -> np.ndarray:
    """The labelled anomalous frames of one clip; refuses a labels file that does not describe it."""
    labels = load_labels(labels_path)
    if clip_id not in labels:
        raise InputError(f"{labels_path}: no entry for clip {clip_id!r} (clips there: {', '.join(sorted(labels)[:8])}…)")
    n, ranges = labels[clip_id]
    if n != n_frames:
        raise InputError(f"{labels_path}: clip {clip_id!r} has {n} frames there but {n_frames} were decoded")
    return frame_labels(n, ranges)


def report(
    video_path: str | Path,
    models_path: str | Path,
    out_path: str | Path,
    labels_path: str | Path | None = None,
    device: str = "cpu",
    n_gallery: int = 6,
    allow_damaged: bool = False,
    stream: int = 0,
    on_frames: Callable[[int], object] = lambda n: None,
) -> Report:
    """Score ``video_path`` (its video ``stream``) with the models in ``models_path`` and write the report into ``out_path``;
    ``on_frames(n)`` follows the scoring pass."""
    video_path, out_path = Path(video_path), Path(out_path)
    ens = Ensemble.load(models_path, device=device)
    result = score_video(video_path, models_path, out_path, maps=True, ensemble=ens, device=device, allow_damaged=allow_damaged, stream=stream,
                         on_frames=on_frames)  # fmt: skip
    truth = clip_truth(labels_path, video_path.stem, result.n_frames) if labels_path else None
    t0 = time.perf_counter()
    chosen = pick_frames(result.score, result.anomalous, n_gallery)
    pictures: dict[int, np.ndarray] = {}  # the gallery's frames, kept as the video pass decodes them
    video = write_side_by_side(video_path, ens, out_path / "maps.h5", out_path / "report.mp4", keep=(set(chosen), pictures), stream=stream)
    classified = None
    if (classifier_path(Path(models_path).parent) / "model.pt").exists():  # a supervised classifier: where it looked, too
        classified = classify_video(video_path, Path(models_path).parent, out_path, device, allow_damaged, stream)
    page = render_html(video_path, ens, result, truth, out_path / "maps.h5", video.name, pictures, classified)
    html_path = out_path / "report.html"
    with atomic_path(html_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("report: %s (video and page in %.1f s)", html_path, time.perf_counter() - t0)
    return Report(html_path, video, result)


# -- the side-by-side video --------------------------------------------------------------------


@lru_cache(maxsize=1)
def h264_encoder() -> str:
    """The H.264 encoder this ffmpeg has: libx264, else libopenh264."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    for name in ("libx264", "libopenh264"):
        if f" {name} " in out:
            return name
    raise UserError(f"{ffmpeg_exe()} has no H.264 encoder (libx264 or libopenh264); install imageio-ffmpeg or a full ffmpeg")


_INFERNO = (matplotlib.colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.float32)


def overlay(gray_rgb: np.ndarray, amap: np.ndarray, threshold: float) -> np.ndarray:
    """The anomaly map over an RGB frame: inferno colours from half the alarm threshold up (see ``map_range``)."""
    lo, hi = map_range(threshold)
    level = np.clip(amap / hi, 0.0, 1.0)
    colour = _INFERNO[(level * 255).astype(np.uint8)]
    alpha = np.where(amap >= lo, 0.35 + 0.45 * np.clip((amap - lo) / (hi - lo), 0.0, 1.0), 0.0)[..., None]
    return (gray_rgb * (1.0 - alpha) + colour * alpha).astype(np.uint8)


def draw_grid(img: np.ndarray, boxes: np.ndarray, hot: np.ndarray) -> None:
    """Outline every region in place: its cell thin grey (overlaps split down the middle), and
    its whole box thick red when above its threshold."""
    H, W = img.shape[:2]
    outlines = [(cell, False) for cell in region_cells(boxes, H, W)] + [(tuple(b), True) for b, is_hot in zip(boxes.tolist(), hot.tolist()) if is_hot]
    for (top, left, h, w), is_hot in outlines:
        colour, t = ((230, 30, 30), 2) if is_hot else ((150, 150, 150), 1)
        y0, y1, x0, x1 = top, min(top + h, H) - 1, left, min(left + w, W) - 1
        img[y0 : y0 + t, x0 : x1 + 1] = colour
        img[max(y1 - t + 1, 0) : y1 + 1, x0 : x1 + 1] = colour
        img[y0 : y1 + 1, x0 : x0 + t] = colour
        img[y0 : y1 + 1, max(x1 - t + 1, 0) : x1 + 1] = colour


def _rgb(frame: np.ndarray) -> np.ndarray:
    return np.repeat(frame, 3, axis=-1) if frame.shape[-1] == 1 else frame


def panel_scale(width: int) -> int:
    return max(1, -(-MIN_PANEL_WIDTH // width))


def compose_frame(
    frame: np.ndarray, recon: np.ndarray, amap: np.ndarray, threshold: float, boxes: np.ndarray, hot: np.ndarray, caption: str,
    recon_label: str = "reconstruction",
) -> np.ndarray:
    """input | reconstruction | overlay under a two-line caption: uint8 RGB (HEADER + s H, 3 s W, 3), s = panel_scale(W)."""
    H, W = amap.shape
    base = _rgb(frame)
    rec = np.repeat((np.clip(recon, 0.0, 1.0) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    ov = overlay(base.astype(np.float32), amap, threshold)
    draw_grid(ov, boxes, hot)
    panels = np.concatenate([base, rec, ov], axis=1)
    k = panel_scale(W)
    if k > 1:
        panels = panels.repeat(k, axis=0).repeat(k, axis=1)
    canvas = np.zeros((HEADER + panels.shape[0], panels.shape[1], 3), np.uint8)
    canvas[HEADER:] = panels
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    font = _font()
    for i, label in enumerate(("input", recon_label, "anomaly map (grid: regions, red: above threshold)")):
        draw.text((i * k * W + 4, 2), label, fill=(200, 200, 200), font=font)
    draw.text((4, 18), caption, fill=(255, 90, 90) if hot.any() else (200, 200, 200), font=font)
    return np.asarray(img)


@lru_cache(maxsize=1)
def _font():
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow without FreeType scaling
        return ImageFont.load_default()


def write_side_by_side(
    video_path: Path, ens: Ensemble, maps_path: Path, out: Path, chunk_frames: int = 64, keep: tuple[set[int], dict] | None = None,
    stream: int = 0,
) -> Path:
    """Decode the clip again and encode, beside it, the reconstructions and anomaly maps that
    scoring wrote into ``maps_path``, as H.264 MP4 (three panels, see :func:`compose_frame`),
    one video frame per decoded frame at the nominal rate (the page maps its times to the clip's).

    ``keep = (wanted, store)``: the decoded frames (0-based) in ``wanted`` are put into ``store``.
    """
    cfg = ens.cfg
    with open_h5(maps_path, "maps") as fh:
        n_frames = fh["maps"].shape[0]
        fps = float(fh.attrs["fps"])
        boxes = fh.attrs["boxes"]
        k = float(fh.attrs["threshold"])
        H, W = fh["maps"].shape[1:]
        placer = AnomalyMapper(ens.regions, (H, W))
        recon_label = "motion as rebuilt (bright: fast)" if cfg.tube_content == "flow" else "reconstruction"
        width, height = 3 * W * panel_scale(W), HEADER + H * panel_scale(W)
        pad_w, pad_h = width % 2, height % 2  # yuv420p needs even sides
        args = [
            ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "pipe:0",
            "-vf", f"pad={width + pad_w}:{height + pad_h}",
            "-c:v", h264_encoder(), "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4",
        ]  # fmt: skip
        if h264_encoder() == "libx264":
            args += ["-preset", "veryfast", "-crf", "23"]
        done = 0
        with atomic_path(out) as tmp, tempfile.TemporaryFile() as errlog:
            proc = subprocess.Popen([*args, str(tmp)], stdin=subprocess.PIPE, stderr=errlog)
            try:
                bar = progress(total=n_frames, desc="report video", unit="frame")
                times = fh["time_s"][()]
                src = open_clip(video_path, cfg.extract, stream)
                for frames in read_frames(src, cfg.extract, chunk_frames, allow_damaged=True):
                    frames = frames[: max(0, n_frames - done)]
                    if not len(frames):
                        break
                    sl = slice(done, done + len(frames))
                    full = placer(fh["reconstructions"][sl].astype(np.float32) / 255.0)
                    maps = fh["maps"][sl].astype(np.float32)
                    z, scores = fh["region_z"][sl], fh["score"][sl]
                    for j, frame in enumerate(frames):
                        i = done + j
                        hot = z[j] > k
                        caption = f"frame {i + 1}  {times[i]:6.1f} s  score {scores[j]:5.2f}" + ("  ANOMALOUS" if hot.any() else "")
                        proc.stdin.write(compose_frame(frame, full[j], maps[j], k, boxes, hot, caption, recon_label).tobytes())
                        if keep is not None and i in keep[0]:
                            keep[1][i] = frame.copy()
                    done += len(frames)
                    bar.update(len(frames))
                bar.close()
                proc.stdin.close()
            except BaseException:
                proc.kill()
                raise
            finally:
                proc.wait()
            if done != n_frames:
                raise InputError(f"{video_path}: decoded {done} frames for the report but {n_frames} were scored; the file changed?")
            if proc.returncode != 0:
                errlog.seek(0)
                last = errlog.read().decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
                raise UserError(f"ffmpeg could not encode the report video: {last[0]}")
    return out


# -- the page ----------------------------------------------------------------------------------


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _svg(fig) -> str:
    text = save_figure(fig, fmt="svg").decode("utf-8")
    return text[text.index("<svg") :]


def render_html(
    video_path: Path, ens: Ensemble, result: ScoreResult, truth: np.ndarray | None, maps_path: Path, video_name: str, pictures: dict[int, np.ndarray],
    classified: Classified | None = None,
) -> str:
    """The page; ``pictures``: the gallery's frames (0-based frame -> decoded frame); ``classified``: the supervised
    classifier's view of the clip, shown with its attention over the same frames."""
    fps, k, n, times = result.fps, result.threshold, result.n_frames, result.times
    name = video_path.name
    duration = result.duration
    fig, (top, mat) = timeline_figure(result.region_z, result.score, result.anomalous, result.region_ids, times, k, truth)
    fig.set_size_inches(11, fig.get_size_inches()[1])
    svg = _svg(fig)  # draws the figure, so the axes' final positions are known below
    x0, x1 = top.get_position().x0, top.get_position().x1
    t0, t1 = top.get_xlim()

    gallery = []
    chosen = sorted(pictures)
    with open_h5(maps_path, "maps") as fh:
        boxes = fh.attrs["boxes"]
        video_fps = float(fh.attrs["fps"])  # the report video's rate, one frame per decoded frame
        for i in chosen:
            z = result.region_z[i]
            top_region = result.region_ids[int(np.argmax(z))]
            stream_z = None if result.stream_z is None else result.stream_z[i]
            streams = streams_text(z, stream_z, result.region_ids)
            detail = stream_detail(z, stream_z)
            detail = f"; {detail}" if detail else ""
            fig = frame_figure(pictures[i], fh["maps"][i].astype(np.float32), boxes, result.region_ids, z, k, frame_title(name, i, times[i], result.score[i], result.anomalous[i], streams))
            png = save_figure(fig)
            gallery.append(
                f'<figure data-frame="{i}"><img alt="frame {i + 1}" src="{_data_uri(png, "image/png")}">'
                f"<figcaption>frame {i + 1} · {times[i]:.1f} s · score {result.score[i]:.2f} · "
                f"strongest region <b>{top_region}</b> ({z.max():.1f}{detail})</figcaption></figure>"
            )

    classifier = _classifier_section(classified, pictures) if classified is not None else ""
    events = result.events
    seg_rows = "".join(
        f'<tr data-frame="{e.first}"><td>{e.first + 1}–{e.last + 1}</td><td>{e.start_s:.1f}–{e.end_s:.1f} s</td>'
        f"<td>{e.peak_score:.2f} at {e.peak_s:.1f} s</td><td>{html.escape(', '.join(e.regions))}</td></tr>"
        for e in events
    ) or '<tr><td colspan="4">no events</td></tr>'
    sz = result.stream_z if result.stream_z is not None and len(result.stream_z) else None
    both = sz is not None and not np.isnan(sz).all()
    thr_rows = "".join(
        f"<tr><td>{r['region_id']}</td><td>{r['held_out_max']:.2f}</td><td>{r['threshold']:.2f}</td><td>{result.region_z[:, j].max():.2f}</td>"
        + (f"<td>{sz[:, j, 0].max():.2f}</td><td>{sz[:, j, 1].max():.2f}</td>" if both else "")
        + "</tr>"
        for j, r in enumerate(ens.manifest["regions"])
    )
    stream_heads = "<th>highest reconstruction z here</th><th>highest novelty z here</th>" if both else ""
    manifest = ens.manifest
    flagged = int(result.anomalous.sum())
    truth_line = ""
    if truth is not None:
        hit = int((truth & result.anomalous).sum())
        fa = int((~truth & result.anomalous).sum())
        truth_line = f"<li>ground truth: {int(truth.sum())} anomalous frames; {hit} of them flagged; {fa} false alarms among {int((~truth).sum())} normal frames</li>"
    summary = f"""<ul>
<li>{n} frames, {duration:.1f} s at {fps:.3g} fps (the frames' own timestamps); <b>{flagged}</b> flagged ({flagged / max(n, 1):.0%}); <b>{len(events)}</b> event(s)</li>
{truth_line}
<li>scored at {n / max(result.seconds, 1e-9):.1f} frames/s ({duration / max(result.seconds, 1e-9):.1f}× real time) on {html.escape(str(ens.detectors[0].device_))}</li>
<li>models: {len(result.region_ids)} regions ({manifest['grid']['rows']}×{manifest['grid']['cols']}), trained {html.escape(str(manifest.get('created', '?')))} on {len(manifest['training_clips'])} clip(s): {html.escape(', '.join(manifest['training_clips']))}</li>
<li>a frame is flagged when its score, the largest score of any region, exceeds the alarm threshold {k:.2f}: the score that a share {ens.cfg.score.false_alarm_rate:g} of the held-out normal frames exceed. {_CELL_Z[ens.cfg.score.statistics]}{_novelty_note(ens.cfg.score.novelty_weight)}</li>
</ul>"""
    return _PAGE.format(
        title=html.escape(f"Anomaly report: {name}"),
        name=html.escape(name),
        source=html.escape(str(result.source)),
        summary=summary,
        video=html.escape(video_name),
        svg=svg,
        seg_rows=seg_rows,
        gallery="".join(gallery) or "<p>no frames</p>",
        classifier=classifier,
        thr_rows=thr_rows,
        stream_heads=stream_heads,
        config=html.escape(to_toml(ens.cfg)),
        geometry=json.dumps({"x0": x0, "x1": x1, "t0": t0, "t1": t1, "video_fps": video_fps, "times": [round(float(t), 3) for t in times]}),
    )


def _classifier_section(c: Classified, pictures: dict[int, np.ndarray]) -> str:
    """The supervised classifier's segments and, over the gallery's frames, its attention maps."""
    rows = "".join(
        f'<tr data-frame="{a}"><td>{a + 1}–{b + 1}</td><td>{c.times[a]:.1f}–{c.times[b] + 1 / c.fps:.1f} s</td><td>{html.escape(k)}</td><td>{p:.2f}</td></tr>'
        for a, b, k, p in c.segments
    ) or '<tr><td colspan="4">no segment of a class other than normal</td></tr>'
    figures = []
    for i in sorted(pictures):
        probs = c.probabilities[i]
        k = int(probs.argmax())
        fig = attention_figure(pictures[i], c.attention[i], probs, c.classes, f"frame {i + 1} · {c.classes[k]} ({probs[k]:.2f})")
        figures.append(f'<figure data-frame="{i}"><img alt="attention at frame {i + 1}" src="{_data_uri(save_figure(fig), "image/png")}">'
                       f"<figcaption>frame {i + 1} · {html.escape(c.classes[k])} {probs[k]:.2f}</figcaption></figure>")  # fmt: skip
    return (f'<h2 id="classifier">Supervised classifier ({html.escape(", ".join(c.classes))}): segments, and where it looked</h2>'
            f"<table><tr><th>frames</th><th>time</th><th>class</th><th>mean probability</th></tr>{rows}</table>"
            f'<div class="gallery">{"".join(figures)}</div>')  # fmt: skip


def _novelty_note(weight: float) -> str:
    if weight == 0:
        return ""
    return (f" A region's score blends its largest cell z with weight {1 - weight:g} and, with weight {weight:g}, its novelty z: how far"
            " the autoencoder's codes of its cells lie from every normal code of the region (the last two columns of the regions table"
            " say which one fired).")


_CELL_Z = {
    "region": "A cell's z measures its reconstruction error against its region's errors on normal frames.",
    "cell": "A cell's z measures its reconstruction error beyond what the amount of motion there explains, against its own normal frames.",
}

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; media-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 1180px; padding: 12px 20px; color: #222; }}
h1 {{ font-size: 20px; margin: 4px 0; }} h2 {{ font-size: 16px; margin: 18px 0 6px; border-bottom: 1px solid #ddd; }}
.src {{ color: #777; font-size: 12px; }}
video {{ width: 100%; background: #000; }}
#timeline {{ position: relative; cursor: crosshair; }}
#timeline svg {{ width: 100%; height: auto; display: block; }}
#playhead {{ position: absolute; top: 0; bottom: 0; width: 2px; background: #1a73e8; pointer-events: none; left: -10px; }}
table {{ border-collapse: collapse; font-size: 13px; }} td, th {{ padding: 2px 10px; border-bottom: 1px solid #eee; text-align: left; }}
tr[data-frame], figure[data-frame] {{ cursor: pointer; }} tr[data-frame]:hover {{ background: #fdecec; }}
.gallery {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 10px; }}
figure {{ margin: 0; }} figure img {{ width: 100%; }} figcaption {{ font-size: 12px; color: #444; }}
pre {{ background: #f6f6f6; padding: 8px; font-size: 12px; max-height: 260px; overflow: auto; }}
</style></head>
<body>
<h1>{title}</h1>
<div class="src">{source}</div>
{summary}
<h2>Video: input | reconstruction | anomaly map</h2>
<video id="video" controls muted playsinline preload="auto" src="{video}"></video>
<h2>Score over time (click to seek)</h2>
<div id="timeline">{svg}<div id="playhead"></div></div>
<h2>Events</h2>
<table><tr><th>frames</th><th>time</th><th>peak score</th><th>regions above threshold</th></tr>{seg_rows}</table>
<h2>Most anomalous frames</h2>
<div class="gallery">{gallery}</div>
{classifier}
<h2>Regions and thresholds</h2>
<table><tr><th>region</th><th>highest score on held-out normal frames</th><th>threshold of the region alone</th><th>highest score here</th>{stream_heads}</tr>{thr_rows}</table>
<h2>Config</h2>
<pre>{config}</pre>
<script>
// the video holds one frame per decoded frame at G.video_fps; G.times are the frames' own times
// in the clip (seconds), which the timeline shows: seeking goes through the frame index
const G = {geometry};
const video = document.getElementById("video");
const tl = document.getElementById("timeline");
const head = document.getElementById("playhead");
function frameAt(t) {{
  let lo = 0, hi = G.times.length - 1;
  while (lo < hi) {{ const mid = (lo + hi + 1) >> 1; if (G.times[mid] <= t) lo = mid; else hi = mid - 1; }}
  return lo;
}}
function seekFrame(i) {{
  video.pause();
  const t = (i + 0.5) / G.video_fps;
  video.currentTime = Math.max(0, isFinite(video.duration) ? Math.min(t, video.duration) : t);
}}
tl.addEventListener("click", (e) => {{
  const r = tl.getBoundingClientRect();
  const f = (e.clientX - r.left) / r.width;
  if (f >= G.x0 && f <= G.x1) seekFrame(frameAt(G.t0 + (f - G.x0) / (G.x1 - G.x0) * (G.t1 - G.t0)));
}});
function drawHead() {{
  const i = Math.min(G.times.length - 1, Math.max(0, Math.floor(video.currentTime * G.video_fps)));
  const f = G.x0 + (G.times[i] - G.t0) / (G.t1 - G.t0) * (G.x1 - G.x0);
  head.style.left = (100 * f) + "%";
}}
video.addEventListener("timeupdate", drawHead);
video.addEventListener("seeked", drawHead);
document.querySelectorAll("[data-frame]").forEach((el) => el.addEventListener("click", () => {{
  seekFrame(parseInt(el.dataset.frame, 10));
  video.scrollIntoView({{behavior: "smooth", block: "center"}});
}}));
</script>
</body></html>
"""
