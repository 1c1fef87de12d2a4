"""Stage 8, serve: a local web app to upload a video, follow its scoring, and open its report.

Starlette (routing, requests, file responses) served by uvicorn. Uploads are
spooled to disk by python-multipart and copied into ``WORK/web/<id>/``; a video
that ffmpeg cannot read is refused at once, a larger one than
``serve.max_upload_megabytes`` before it is read. One worker thread scores the
queued videos one at a time with ``pipeline.report.report``; a job that fails is
marked failed, its folder removed, and the server goes on. Files are served
from ``WORK/web/`` only: a path that resolves anywhere else is not found.

Pages: ``/`` (the models, the upload form, the queue, the videos scored so far);
``/files/<id>/report.html`` (the existing report, with its video). API:
``POST /api/jobs`` (multipart field ``video``) -> ``{"id", "url"}``;
``GET /api/jobs/<id>`` -> state, progress, and when done the report and
``scores.csv`` URLs; ``GET /api/videos`` -> the videos scored so far.
"""

from __future__ import annotations

import csv
import json
import logging
import queue
import re
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from cuboid_ad.core.config import Config
from cuboid_ad.core.errors import UserError
from cuboid_ad.core.lock import feedback_lock
from cuboid_ad.ensemble.ensemble import Ensemble
from cuboid_ad.pipeline.media.decode import open_clip
from cuboid_ad.pipeline.stages.feedback import absorbed_ids, list_feedback, record_normal, stretch_of_event, undo_feedback, update_models
from cuboid_ad.pipeline.views.report import report, stream_rows, templates

log = logging.getLogger(__name__)


def safe_name(name: str) -> str:
    """An upload's file name reduced to letters, digits, '.', '_' and '-' (no path, no leading dot)."""
    base = re.split(r"[\\/]", name or "")[-1]
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".")[:80]
    return clean or "video"


@dataclass
class Job:
    id: str
    name: str
    state: str = "queued"  # queued, running, done, failed
    kind: str = "score"  # or "update": the models absorb the stretches marked as normal
    frames_done: int = 0
    frames_total: int = 0  # an estimate from the file's duration (0: unknown)
    fps: float = 0.0
    seconds_left: float | None = None
    error: str | None = None
    started: float = 0.0

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("started")
        out["progress"] = round(min(1.0, self.frames_done / self.frames_total), 3) if self.frames_total else None
        if self.state == "done" and self.kind == "score":
            out["report_url"] = f"/files/{self.id}/report.html"
            out["scores_url"] = f"/files/{self.id}/scores.csv"
        return out


class Jobs:
    """The queue of uploaded videos, scored one at a time by a worker thread."""

    def __init__(self, work: Path, device: str):
        self.work, self.device = work, device
        self.web = work / "web"
        self.jobs: dict[str, Job] = {}
        self.queue: queue.Queue[Job] = queue.Queue()
        self.lock = threading.Lock()
        threading.Thread(target=self._run, name="jobs", daemon=True).start()

    def add(self, job: Job) -> None:
        with self.lock:
            self.jobs[job.id] = job
        self.queue.put(job)

    def _run(self) -> None:
        while True:
            job = self.queue.get()
            folder = self.web / job.id
            job.state, job.started = "running", time.monotonic()

            def advance(n: int, job: Job = job) -> None:
                job.frames_done += n
                elapsed = time.monotonic() - job.started
                job.fps = round(job.frames_done / elapsed, 1) if elapsed > 0 else 0.0
                if job.frames_total and job.fps:
                    job.seconds_left = round(max(0.0, job.frames_total - job.frames_done) / job.fps, 1)

            if job.kind == "update":
                self._update(job)
                continue
            try:
                report(folder / "upload" / job.name, self.work / "models", folder, device=self.device, on_frames=advance,
                       feedback_url=f"/api/feedback?job={job.id}")  # fmt: skip
                (folder / "job.json").write_text(json.dumps({"name": job.name, "scored": datetime.now().strftime("%Y-%m-%d %H:%M:%S")}))
                job.state, job.seconds_left = "done", 0.0
            except Exception as exc:  # a crash fails this job, the server goes on
                if isinstance(exc, UserError):
                    job.error = str(exc).replace(str(folder / "upload") + "/", "")
                else:
                    log.exception("job %s failed", job.id)
                    job.error = f"internal error: {type(exc).__name__}: {exc}"
                shutil.rmtree(folder, ignore_errors=True)  # before the state says so: a client told "failed" finds nothing left
                job.state = "failed"


    def _update(self, job: Job) -> None:
        """The models absorb every stretch marked as normal; reports made next use the new version."""
        try:
            with feedback_lock(self.work):
                result = update_models(self.work, device=self.device)
            job.state, job.error = "done", None
            job.name = result.summary()
        except Exception as exc:  # a failed update leaves the previous version in use
            if not isinstance(exc, UserError):
                log.exception("update %s failed", job.id)
            job.state, job.error = "failed", str(exc)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def scored_videos(web: Path) -> list[dict[str, Any]]:
    """The videos scored so far: name, when, peak score, number of events, report URL."""
    out = []
    for job_file in sorted(web.glob("*/job.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        folder = job_file.parent
        try:
            meta = json.loads(job_file.read_text())
            with open(folder / "scores.csv", newline="") as fh:
                peak = max((float(r["score"]) for r in csv.DictReader(fh)), default=0.0)
            with open(folder / "events.csv", newline="") as fh:
                n_events = sum(1 for r in csv.DictReader(fh) if r.get("kind", "anomaly") == "anomaly")
            out.append({"id": folder.name, "name": str(meta["name"]), "scored": str(meta["scored"]), "peak_score": round(peak, 2), "events": n_events,
                        "report_url": f"/files/{folder.name}/report.html"})  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError) as exc:  # a damaged folder is left out, not the whole list
            log.warning("%s: left out of the videos scored (%s)", folder, exc)
    return out


def make_app(work: str | Path, cfg: Config | None = None, device: str = "cpu") -> Starlette:
    """The web app over the models in ``work``/models; uploads and reports live in ``work``/web."""
    work = Path(work)
    ens = Ensemble.load(work / "models", cfg, device)  # refuses missing or mismatched models at start
    limit = (cfg or ens.cfg).serve.max_upload_megabytes * 1e6
    jobs = Jobs(work, device)
    web = jobs.web
    web.mkdir(parents=True, exist_ok=True)
    manifest = work / "models" / "manifest.json"
    in_use = {"seen": manifest.stat().st_mtime_ns, "ens": ens}

    def models_in_use() -> Ensemble:
        """The version in use now (an update may have made a new one): loaded again only when the manifest changed."""
        seen = manifest.stat().st_mtime_ns
        if seen != in_use["seen"]:
            in_use["ens"], in_use["seen"] = Ensemble.load(work / "models"), seen
        return in_use["ens"]

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(_home_page(work, models_in_use(), jobs, scored_videos(web), limit))

    async def create_job(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + 65536:  # the form's own bytes (boundaries, headers) beside the file
            return _error(413, f"the upload is {int(declared) / 1e6:.0f} MB; the limit is {limit / 1e6:.0f} MB (serve.max_upload_megabytes)")
        try:
            form = await request.form(max_files=1, max_fields=5)
        except Exception as exc:
            return _error(400, f"not a multipart form with a 'video' file ({exc})")
        upload = form.get("video")
        if upload is None or isinstance(upload, str):
            await form.close()
            return _error(400, "no file in the form field 'video'")
        job = Job(id=f"{int(time.time())}-{secrets.token_hex(4)}", name=safe_name(upload.filename or "video"))
        folder = web / job.id
        target = folder / "upload" / job.name  # apart from the outputs, whatever its name (report.mp4, scores.csv ...)
        target.parent.mkdir(parents=True)
        size = 0
        try:
            with open(target, "wb") as fh:
                while chunk := await upload.read(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise UserError(f"the upload is over the limit of {limit / 1e6:.0f} MB (serve.max_upload_megabytes)")
                    fh.write(chunk)
            if size == 0:
                raise UserError(f"{job.name}: empty file")
            src = await run_in_threadpool(open_clip, target, ens.cfg.extract)  # not a video: refused now, with ffmpeg's reason
        except UserError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            return _error(413 if size > limit else 400, str(exc).replace(str(target.parent) + "/", ""))
        finally:
            await form.close()
        job.frames_total = src.n_frames_estimate
        jobs.add(job)
        return JSONResponse({"id": job.id, "url": f"/api/jobs/{job.id}"}, status_code=201)

    async def list_jobs(request: Request) -> JSONResponse:
        return JSONResponse([j.public() for j in list(jobs.jobs.values()) if j.state in ("queued", "running")])

    async def get_job(request: Request) -> Response:
        job = jobs.jobs.get(request.path_params["id"])
        return JSONResponse(job.public()) if job else _error(404, "no such job")

    async def videos(request: Request) -> JSONResponse:
        return JSONResponse(scored_videos(web))

    async def mark_normal(request: Request) -> Response:
        """A report's "Not an anomaly" button: event N of the scored video of job ``?job=`` is recorded as normal."""
        job_id = request.query_params.get("job", "")
        try:
            body = await request.json()
            event = int(body["event"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "expected JSON {\"event\": N}")
        folder = (web / job_id).resolve()
        if not job_id or not folder.is_relative_to(web.resolve()) or not (folder / "events.csv").exists():
            return _error(404, "no such scored video")

        def record():
            source, stream, from_s, to_s, _ = stretch_of_event(folder, event)
            with feedback_lock(work):
                return record_normal(work, source, from_s, to_s, stream, f"event {event} of {jobs_name(folder)} (web app)")

        try:
            r = await run_in_threadpool(record)
        except UserError as exc:
            return _error(400, str(exc))
        return JSONResponse({"id": r.id, "from_s": r.meta["from_s"], "to_s": r.meta["to_s"]}, status_code=201)

    async def feedback_list(request: Request) -> JSONResponse:
        return JSONResponse(_feedback_rows(work))

    async def feedback_undo(request: Request) -> Response:
        def undo():
            with feedback_lock(work):
                return undo_feedback(work, request.path_params["id"])

        try:
            r = await run_in_threadpool(undo)
        except UserError as exc:
            return _error(404 if "no feedback" in str(exc) else 409, str(exc))
        return JSONResponse({"undone": r.id})

    async def feedback_apply(request: Request) -> JSONResponse:
        job = Job(id=f"{int(time.time())}-{secrets.token_hex(4)}", name="update the models with the feedback", kind="update")
        jobs.add(job)
        return JSONResponse({"id": job.id, "url": f"/api/jobs/{job.id}"}, status_code=201)

    async def files(request: Request) -> Response:
        root = web.resolve()
        wanted = request.path_params["path"]
        try:
            path = (root / wanted).resolve(strict=True)  # follows symlinks: where the file really is
        except (OSError, RuntimeError):
            return _error(404, "not found")
        if not path.is_relative_to(root) or not path.is_file() or path.name == "job.json":
            return _error(404, "not found")
        return FileResponse(path)

    return Starlette(
        routes=[
            Route("/", home),
            Route("/api/jobs", create_job, methods=["POST"]),
            Route("/api/jobs", list_jobs, methods=["GET"]),
            Route("/api/jobs/{id}", get_job),
            Route("/api/videos", videos),
            Route("/api/feedback", mark_normal, methods=["POST"]),
            Route("/api/feedback", feedback_list, methods=["GET"]),
            Route("/api/feedback/apply", feedback_apply, methods=["POST"]),
            Route("/api/feedback/{id}/undo", feedback_undo, methods=["POST"]),
            Route("/files/{path:path}", files),
        ]
    )


def jobs_name(folder: Path) -> str:
    """A scored upload's name, as its job recorded it."""
    meta = folder / "job.json"
    return json.loads(meta.read_text()).get("name", folder.name) if meta.exists() else folder.name


def _feedback_rows(work: Path) -> list[dict[str, Any]]:
    held = set(absorbed_ids(work))
    return [{"id": r.id, "created": r.meta["created"], "source": Path(r.meta["source"]).name, "from_s": r.meta["from_s"], "to_s": r.meta["to_s"],
             "frames": r.meta["frames"], "how": r.meta["how"], "absorbed": r.id in held} for r in list_feedback(work)]  # fmt: skip


def _home_page(work: Path, ens: Ensemble, jobs: Jobs, videos: list[dict[str, Any]], limit: float) -> str:
    cfg = ens.cfg
    created = str(ens.manifest.get("created", ""))[:16].replace("T", " ")
    clips = ens.manifest.get("training_clips") or []
    waiting = [j for j in jobs.jobs.values() if j.state in ("queued", "running")]
    return templates().get_template("home.html").render(
        work=str(work), grid=f"{cfg.cuboids.grid_rows} × {cfg.cuboids.grid_cols}", regions=len(ens.regions), threshold=f"{ens.threshold_:.2f}",
        rate=cfg.score.false_alarm_rate, trained=created or "?", n_clips=len(clips) if clips else "?", limit=f"{limit / 1e6:.0f}", videos=videos,
        waiting=waiting, streams=stream_rows(ens), version=ens.version, feedback=_feedback_rows(work),
    )  # fmt: skip
