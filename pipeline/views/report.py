"""Stage 6b, report: one clip scored and shown on one self-contained HTML page.

``report(VIDEO)`` writes into ``out_path``:

``report.html``
    no network needed: inline CSS and JS, plots inline (SVG and PNG as data),
    the video beside it. The score timeline over the regions x time matrix
    (threshold line, flagged frames shaded, ground truth shaded when labels
    are given; a click seeks the video), the side-by-side video, the anomalous
    events (click to seek), a gallery of the most anomalous frames, and a
    summary: thresholds, the streams and which fired where, config, training
    data, processing speed. The page is ``templates/report.html`` (Jinja2, every
    value escaped).
``report.mp4``
    H.264, three panels per frame: input | reconstruction (what the models
    rebuild, from ``maps.h5``: see ``ensemble.detector.shown_reconstruction``) | anomaly map over
    the input with the region grid, regions above threshold outlined in red.
``scores.csv``, ``events.csv``, ``maps.h5``
    as written by ``score``.
``classes.csv``, ``attention.h5``
    when the work folder has a supervised classifier (`supervise`): as written by
    ``classify``; the page then also shows its segments and, over the gallery's
    frames, where it looked (its attention map).
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from cuboid_ad.core.artifacts import atomic_path
from cuboid_ad.core.config import to_toml
from cuboid_ad.core.errors import InputError
from cuboid_ad.core.labels import clip_truth
from cuboid_ad.core.progress import progress
from cuboid_ad.core.workdir import WorkDir
from cuboid_ad.ensemble.anomaly_map import AnomalyMapper
from cuboid_ad.ensemble.ensemble import Ensemble
from cuboid_ad.pipeline.media.decode import open_clip, read_frames
from cuboid_ad.pipeline.media.encode import Mp4Writer
from cuboid_ad.pipeline.pictures.figures import attention_figure, frame_figure, frame_title, pick_frames, save_figure, streams_text, timeline_figure
from cuboid_ad.pipeline.pictures.panels import compose_frame, panel_size
from cuboid_ad.pipeline.scoring.outputs import Maps, read_maps
from cuboid_ad.pipeline.stages.score import ScoreResult, score_video
from cuboid_ad.pipeline.stages.supervise import Classified, classify_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    html: Path
    video: Path
    result: ScoreResult


@lru_cache(maxsize=1)
def templates() -> jinja2.Environment:
    """The pages' templates (``templates/``), every value HTML-escaped unless marked safe."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)  # fmt: skip


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
    feedback_url: str | None = None,
) -> Report:
    """Score ``video_path`` (its video ``stream``) with the models in ``models_path`` and write the report into ``out_path``;
    ``on_frames(n)`` follows the scoring pass. ``feedback_url``: where the page's "Not an anomaly" buttons post
    (the web app's; None: no buttons, as for a page opened from disk)."""
    video_path, out_path = Path(video_path), Path(out_path)
    ens = Ensemble.load(models_path, device=device)
    result = score_video(video_path, models_path, out_path, maps=True, ensemble=ens, device=device, allow_damaged=allow_damaged, stream=stream,
                         on_frames=on_frames)  # fmt: skip
    truth = clip_truth(labels_path, video_path.stem, result.n_frames) if labels_path else None
    t0 = time.perf_counter()
    maps = read_maps(out_path / "maps.h5")
    chosen = pick_frames(result.score, result.anomalous, n_gallery)
    pictures: dict[int, np.ndarray] = {}  # the gallery's frames, kept as the video pass decodes them
    video = write_side_by_side(video_path, ens, maps, out_path / "report.mp4", keep=(set(chosen), pictures), stream=stream)
    classified = None
    classifier = WorkDir(Path(models_path).parent).classifier / "model.pt"
    if classifier.exists():  # a supervised classifier: where it looked, too
        classified = classify_video(video_path, Path(models_path).parent, out_path, device, allow_damaged, stream)
    page = render_html(video_path, ens, result, truth, maps, video.name, pictures, classified, feedback_url)
    html_path = out_path / "report.html"
    with atomic_path(html_path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("report: %s (video and page in %.1f s)", html_path, time.perf_counter() - t0)
    return Report(html_path, video, result)


def write_side_by_side(
    video_path: Path, ens: Ensemble, maps: Maps, out: Path, chunk_frames: int = 64, keep: tuple[set[int], dict] | None = None, stream: int = 0,
) -> Path:
    """Decode the clip again and encode, beside it, the reconstructions and anomaly maps that
    scoring wrote into ``maps``, as H.264 MP4 (three panels, see ``pipeline.pictures.panels``),
    one video frame per decoded frame at the nominal rate (the page maps its times to the clip's).

    ``keep = (wanted, store)``: the decoded frames (0-based) in ``wanted`` are put into ``store``.
    """
    import h5py

    cfg = ens.cfg
    H, W = ens.frame_size
    placer = AnomalyMapper(ens.regions, (H, W))
    recon_label = "motion as rebuilt (bright: fast)" if cfg.tube_content == "flow" else "reconstruction"
    k, n_frames = maps.threshold, maps.n_frames
    done = 0
    with h5py.File(maps.path, "r") as fh, Mp4Writer(out, panel_size(H, W), 3, maps.fps) as writer:
        bar = progress(total=n_frames, desc="report video", unit="frame")
        src = open_clip(video_path, cfg.extract, stream)
        for frames in read_frames(src, cfg.extract, chunk_frames, allow_damaged=True):
            frames = frames[: max(0, n_frames - done)]
            if not len(frames):
                break
            sl = slice(done, done + len(frames))
            full = placer(fh["reconstructions"][sl].astype(np.float32) / 255.0)
            amaps = fh["maps"][sl].astype(np.float32)
            for j, frame in enumerate(frames):
                i = done + j
                hot = maps.region_z[i] > k
                caption = f"frame {i + 1}  {maps.times[i]:6.1f} s  score {maps.score[i]:5.2f}" + ("  ANOMALOUS" if hot.any() else "")
                writer.write(compose_frame(frame, full[j], amaps[j], k, maps.boxes, hot, caption, recon_label))
                if keep is not None and i in keep[0]:
                    keep[1][i] = frame.copy()
            done += len(frames)
            bar.update(len(frames))
        bar.close()
        if done != n_frames:
            raise InputError(f"{video_path}: decoded {done} frames for the report but {n_frames} were scored; the file changed?")
        return writer.close()


# -- the page ----------------------------------------------------------------------------------


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _svg(fig) -> str:
    text = save_figure(fig, fmt="svg").decode("utf-8")
    return text[text.index("<svg") :]


def stream_rows(ens: Ensemble) -> list[dict[str, Any]]:
    """The models' streams for a page: name, weight, what it measures."""
    weights = dict(ens.cfg.score.streams)
    return [{"name": s.name, "weight": f"{weights[s.name]:g}", "description": s.description} for s in ens.streams]


def render_html(
    video_path: Path, ens: Ensemble, result: ScoreResult, truth: np.ndarray | None, maps: Maps, video_name: str, pictures: dict[int, np.ndarray],
    classified: Classified | None = None, feedback_url: str | None = None,
) -> str:
    """The page; ``pictures``: the gallery's frames (0-based frame -> decoded frame); ``classified``: the supervised
    classifier's view of the clip, shown with its attention over the same frames."""
    k, n, times = result.threshold, result.n_frames, result.times
    name = video_path.name
    fig, (top, _) = timeline_figure(result.region_z, result.score, result.anomalous, result.region_ids, times, k, truth)
    fig.set_size_inches(11, fig.get_size_inches()[1])
    svg = _svg(fig)  # draws the figure, so the axes' final positions are known below
    x0, x1 = top.get_position().x0, top.get_position().x1
    t0, t1 = top.get_xlim()
    sz = result.stream_z
    gallery = []
    amaps = maps.anomaly_maps(sorted(pictures))
    for i in sorted(pictures):
        z = result.region_z[i]
        j = int(np.argmax(z))
        title = frame_title(name, i, times[i], result.score[i], result.anomalous[i], streams_text(z, sz[i], result.region_ids, result.streams))
        png = save_figure(frame_figure(pictures[i], amaps[i], maps.boxes, result.region_ids, z, k, title))
        gallery.append({"frame": i, "src": _data_uri(png, "image/png"), "time": float(times[i]), "score": float(result.score[i]),
                        "region": result.region_ids[j], "region_score": float(z.max()), "streams": list(zip(result.streams, sz[i, j].tolist()))})  # fmt: skip
    regions = [
        {"id": r["region_id"], "held_out_max": r["held_out_max"], "threshold": r["threshold"], "top": float(result.region_z[:, j].max(initial=-np.inf)),
         "streams": [float(sz[:, j, s].max(initial=-np.inf)) for s in range(len(result.streams))]}
        for j, r in enumerate(ens.manifest["regions"])
    ]  # fmt: skip
    flagged = int(result.anomalous.sum())
    truth_counts = None
    if truth is not None:
        truth_counts = {"anomalous": int(truth.sum()), "hit": int((truth & result.anomalous).sum()), "false": int((~truth & result.anomalous).sum()),
                        "normal": int((~truth).sum())}  # fmt: skip
    manifest = ens.manifest
    seconds = max(result.seconds, 1e-9)
    return templates().get_template("report.html").render(
        name=name, source=str(result.source), n=n, duration=result.duration, fps=result.fps, flagged=flagged, events=result.events,
        truth=truth_counts, speed={"fps": n / seconds, "realtime": result.duration / seconds}, device=str(ens.detectors[0].device_),
        region_ids=result.region_ids, grid=f"{manifest['grid']['rows']}×{manifest['grid']['cols']}", created=str(manifest.get("created", "?")),
        training_clips=manifest["training_clips"], threshold=k, false_alarm_rate=f"{ens.cfg.score.false_alarm_rate:g}", streams=stream_rows(ens),
        video=video_name, svg=svg, gallery=gallery, classifier=_classifier_view(classified, pictures) if classified is not None else None,
        regions=regions, config=to_toml(ens.cfg), feedback_url=feedback_url, tampers=[{"first": e.first, "kind": " then ".join(e.regions), "start_s": e.start_s, "end_s": e.end_s} for e in result.tampers],
        geometry={"x0": x0, "x1": x1, "t0": t0, "t1": t1, "video_fps": maps.fps, "times": [round(float(t), 3) for t in times]},
    )  # fmt: skip


def _classifier_view(c: Classified, pictures: dict[int, np.ndarray]) -> dict[str, Any]:
    """The supervised classifier's segments and, over the gallery's frames, its attention maps."""
    segments = [{"first": a, "last": b, "start_s": float(c.times[a]), "end_s": float(c.times[b] + 1 / c.fps), "name": k, "p": p} for a, b, k, p in c.segments]
    figures = []
    for i in sorted(pictures):
        probs = c.probabilities[i]
        k = int(probs.argmax())
        fig = attention_figure(pictures[i], c.attention[i], probs, c.classes, f"frame {i + 1} · {c.classes[k]} ({probs[k]:.2f})")
        figures.append({"frame": i, "src": _data_uri(save_figure(fig), "image/png"), "name": c.classes[k], "p": float(probs[k])})
    return {"classes": c.classes, "segments": segments, "figures": figures}
