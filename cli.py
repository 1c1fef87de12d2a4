"""cuboid-ad: learn what normal looks like in every part of a scene, then find when and where a video is unusual.

Each command parses its options and calls one library function; heavy imports
happen inside the commands so that --help is instant.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from pathlib import Path

import click

from cuboid_ad.core.errors import UserError
from cuboid_ad.core.lock import feedback_lock, work_lock

log = logging.getLogger("cuboid-ad")


class Cli(click.Group):
    """Prints a user error as one line (exit 1); ``--debug`` shows the traceback instead."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            if ctx.meta.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted: finished files are kept, nothing half-written; run the same command again to resume", err=True)
            ctx.exit(130)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """Video anomaly detection with a per-region ensemble of spatio-temporal autoencoders.

    \b
    Typical use:
      cli.py extract  --data DATA --work work    # DATA/train/: normal clips
      cli.py cuboids  --data DATA --work work
      cli.py train    --data DATA --work work
      cli.py score    VIDEO --work work --heatmaps
      cli.py evaluate --data DATA --work work    # DATA/test/ + DATA/labels.json

    A clip is a video file (any container ffmpeg reads) or a folder of numbered
    images (001.tif, 002.tif, ...). Every stage skips work that is already up to
    date and resumes after an interruption; --force redoes it.
    """


# -- shared options --------------------------------------------------------------------------


def _set_debug(ctx: click.Context, _param, value: bool) -> bool:
    ctx.meta["debug"] = value
    return value


def run_options(f):
    """--quiet and --debug, on every command."""
    f = click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug, is_eager=True,
                     help="Show full tracebacks and debug logging.")(f)
    f = click.option("-q", "--quiet", is_flag=True, help="No progress bars, warnings and errors only.")(f)

    @functools.wraps(f)
    def wrapper(*args, quiet: bool, **kwargs):
        from cuboid_ad.core.progress import set_progress

        debug = click.get_current_context().meta.get("debug", False)
        level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
        logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
        set_progress(not quiet)
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():
            return f(*args, **kwargs)

    return wrapper


work_option = click.option("--work", "work", type=click.Path(file_okay=False, path_type=Path), default=Path("work"),
                           show_default=True, help="Work folder holding frames/, cuboids/, models/ and outputs.")
config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                             help="TOML file overriding the default config (see `cli.py config`).")
preset_option = click.option("--preset", default=None, help="Start from a named preset: default, paper, convlstm.")
force_option = click.option("--force", is_flag=True, help="Redo the stage even where its outputs are up to date.")
jobs_option = click.option("--jobs", type=int, default=0, show_default="0 = one per core",
                           help="Clips or regions processed in parallel.")
damaged_option = click.option("--allow-damaged", is_flag=True,
                              help="Keep the frames that decode from a truncated or damaged clip instead of refusing it.")
device_option = click.option("--device", default="auto", show_default=True,
                             help="Torch device: auto (CUDA when available), cpu, cuda, cuda:1, ...")
scheduler_option = click.option("--scheduler", default=None, metavar="ADDRESS", envvar="CUBOID_AD_SCHEDULER", show_envvar=True,
                                help="Run the per-clip / per-region work as tasks on this Dask scheduler (tcp://host:8786); "
                                     "WORK must be on storage every worker sees. [default: this machine]")  # fmt: skip
stream_option = click.option("--stream", type=click.IntRange(0, None), default=0, show_default=True,
                             help="Which video stream of a file to read, counting from 0 (audio, subtitle and data streams are ignored).")


def data_option(required: bool):
    help_text = "Data folder: train/ (normal clips), test/ (clips to score), labels.json."
    if not required:
        help_text += " Optional here: checks that the work folder was extracted from it."
    return click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=required, help=help_text)


def _config(config_path, preset):
    from cuboid_ad.core.config import load_config

    return load_config(config_path, preset)


def _optional_config(config_path, preset):
    """The config to check models against, or None to use the models' own."""
    return _config(config_path, preset) if config_path or preset else None


def _jobs(jobs: int) -> int:
    import joblib

    return jobs if jobs > 0 else joblib.cpu_count()


# -- stages ------------------------------------------------------------------------------------


@cli.command()
@data_option(required=True)
@work_option
@config_option
@preset_option
@force_option
@jobs_option
@damaged_option
@stream_option
@scheduler_option
@run_options
def extract(data, work, config_path, preset, force, jobs, allow_damaged, stream, scheduler):
    """Decode DATA/train's clips into WORK/frames/ (one HDF5 file of frames per clip).

    Frames are converted to the working size and colour of the config
    ([extract]). Clips already extracted with the same settings are skipped.
    """
    from cuboid_ad.core.cluster import connect
    from cuboid_ad.core.workdir import WorkDir
    from cuboid_ad.pipeline.stages.extract import extract_folder

    cfg = _config(config_path, preset)
    with work_lock(work, exclusive=True), connect(scheduler, [work], warm_modules=(extract_folder.__module__,)) as cluster:
        paths = extract_folder(data / "train", WorkDir(work).frames, cfg, n_jobs=_jobs(jobs), force=force, allow_damaged=allow_damaged,
                               stream=stream, cluster=cluster)  # fmt: skip
    click.echo(f"extract: {len(paths)} clips in {WorkDir(work).frames}")


@cli.command()
@data_option(required=False)
@work_option
@config_option
@preset_option
@force_option
@jobs_option
@scheduler_option
@run_options
def cuboids(data, work, config_path, preset, force, jobs, scheduler):
    """Slice WORK/frames/ into a grid of regions: WORK/cuboids/<region>/<clip>.h5.

    Each region's crop of every frame is resized to patch_size x patch_size and
    stored once; training windows of clip_length_in_frames frames are read from
    it ([cuboids]).
    """
    from cuboid_ad.core.cluster import connect
    from cuboid_ad.core.workdir import WorkDir
    from cuboid_ad.pipeline.stages.extract import check_frames_origin
    from cuboid_ad.pipeline.stages.slice import slice_folder

    cfg = _config(config_path, preset)
    wd = WorkDir(work)
    with work_lock(work, exclusive=True):
        if data is not None:
            check_frames_origin(wd.frames, data / "train")
        with connect(scheduler, [work], warm_modules=(slice_folder.__module__,)) as cluster:
            paths = slice_folder(wd.frames, wd.cuboids, cfg, n_jobs=_jobs(jobs), force=force, cluster=cluster)
    click.echo(f"cuboids: {len(paths)} clips x {len(cfg.cuboids.region_ids)} regions in {wd.cuboids}")


@cli.command()
@data_option(required=False)
@work_option
@config_option
@preset_option
@force_option
@jobs_option
@click.option("--threads", type=click.IntRange(0, None), default=0, show_default="0 = the cores shared out",
              help="Torch threads per region being trained; fixing it makes the weights the same on any machine.")
@click.option("--update", is_flag=True, help="Only absorb the stretches marked as normal (`feedback normal`) into the trained models: "
              "a new version in seconds, no training from scratch.")
@click.option("--rollback", is_flag=True, help="Put the models version before the one in use back in use.")
@device_option
@scheduler_option
@run_options
def train(data, work, config_path, preset, force, jobs, threads, update, rollback, device, scheduler):
    """Fit one autoencoder per region on WORK/cuboids/ and write WORK/models/.

    Each region's model is trained on normal windows only, with 20% of the
    frames held out (in contiguous blocks) for early stopping. Then the normal
    frames set what normal looks like in every cell of every region (its
    reconstruction error, and a bank of normal codes its novelty is measured
    against), and the held-out frames set the alarm threshold
    (score.false_alarm_rate). Regions
    train in parallel; with only [score] changed, train recalibrates and keeps the weights.
    """
    from cuboid_ad.core.cluster import connect
    from cuboid_ad.core.workdir import WorkDir
    from cuboid_ad.pipeline.stages import feedback
    from cuboid_ad.pipeline.stages.extract import check_frames_origin
    from cuboid_ad.pipeline.stages.train import train_ensemble

    if update and rollback:
        raise click.UsageError("--update and --rollback do opposite things: give one")
    wd = WorkDir(work)
    if update or rollback:  # new files and a new manifest only: a camera being watched takes them up without a restart
        with feedback_lock(work):
            if rollback:
                click.echo(f"train: models version {feedback.rollback(work)} is in use again (`feedback list` shows what is recorded)")
            else:
                _print_update(feedback.update_models(work, device=device, jobs=jobs))
        return
    cfg = _config(config_path, preset)
    with work_lock(work, exclusive=True):
        if data is not None:
            check_frames_origin(wd.frames, data / "train")
        with connect(scheduler, [work], warm_modules=(train_ensemble.__module__,)) as cluster:
            manifest = train_ensemble(wd.cuboids, wd.models, cfg, n_jobs=jobs, device=device, force=force, threads=threads, cluster=cluster)
        click.echo(f"train: {len(cfg.cuboids.region_ids)} region models, manifest {manifest}")
        _print_alarms(manifest)
        if feedback.list_feedback(work):  # stretches marked as normal stay the operator's word through retraining
            _print_update(feedback.update_models(work, device=device, jobs=jobs))


def _print_update(r) -> None:
    if not r.records and not r.version:
        click.echo("feedback: nothing is recorded as normal; the trained models stay in use")
        return
    click.echo(f"feedback: {r.summary()}")
    for when in ("before", "after"):
        if when in r.checks:
            c = r.checks[when]
            click.echo(f"  {when:6s} held-out normal frames flagged {c['held_out_normal_flagged']:.1%}, the same three times faster caught "
                       f"{c['three_times_faster_caught']:.1%}")  # fmt: skip
    if r.checks and r.checks["after"]["three_times_faster_caught"] < r.checks["before"]["three_times_faster_caught"] - 0.01:
        click.echo("warning: the changed regions catch less of their own fast-played footage than before; `cli.py train --rollback` undoes the update",
                   err=True)  # fmt: skip


def _print_alarms(manifest: Path) -> None:
    """What the alarm threshold promises, and a warning when it stands on too little normal footage."""
    from cuboid_ad.core.artifacts import read_json

    a = read_json(manifest)["alarms"]
    click.echo(f"alarm threshold {a['threshold']:.2f}: about {a['estimated_false_events_per_hour']:.2g} false events an hour of normal footage "
               f"({a['reach']})")  # fmt: skip
    if a["too_little_footage"]:
        click.echo(f"warning: the alarm threshold stands on {a['held_out_minutes'] * 60:.0f} s of held-out normal footage; with less than "
                   "5 minutes of normal footage (1 minute held out) expect more false alarms than that: add normal footage", err=True)  # fmt: skip


@cli.group("feedback")
def feedback_group() -> None:
    """Teach the models what is normal: mark a false alarm, and `train --update` absorbs it in seconds.

    \b
      cli.py feedback normal WORK/scores/clip --event 2 --work W   # an event of a scored clip
      cli.py feedback normal video.mp4 --from 12 --to 20 --work W  # any stretch of any video
      cli.py feedback normal --watch-event ID --work W             # a watched camera's event (its saved clip)
      cli.py feedback list --work W
      cli.py feedback undo ID --work W
      cli.py train --update --work W                               # absorb them (or: feedback apply)
    """


@feedback_group.command("normal")
@click.argument("what", required=False, type=click.Path(path_type=Path))
@work_option
@click.option("--event", type=click.IntRange(1, None), default=None, help="With a scores folder: which of its events (events.csv, 1-based).")
@click.option("--from", "from_s", type=float, default=None, help="With a video: where the normal stretch starts (seconds).")
@click.option("--to", "to_s", type=float, default=None, help="With a video: where it ends (seconds).")
@click.option("--watch-event", default=None, help="The id of a `watch` event: its saved clip is the stretch.")
@click.option("--camera", default=None, help="With --watch-event: the camera [default: whichever has it].")
@stream_option
@run_options
def feedback_normal(what, work, event, from_s, to_s, watch_event, camera, stream):
    """Record a stretch as normal: a scored clip's event (WHAT = its scores folder, --event N), a video's stretch
    (WHAT = the video, --from S --to S), or a watched camera's event (--watch-event ID)."""
    from cuboid_ad.pipeline.stages import feedback

    if watch_event:
        source, stream, from_s, to_s, how = feedback.stretch_of_watch_event(work, watch_event, camera)
    elif what is not None and what.is_dir() and (what / "events.csv").exists():
        if event is None:
            raise click.UsageError("a scores folder needs --event N (the event's number in its events.csv)")
        source, stream, from_s, to_s, how = feedback.stretch_of_event(what, event)
    elif what is not None:
        if from_s is None or to_s is None:
            raise click.UsageError("a video needs --from and --to (seconds)")
        source, how = what, ""
    else:
        raise click.UsageError("give a scores folder and --event, a video and --from/--to, or --watch-event")
    with feedback_lock(work):
        r = feedback.record_normal(work, source, from_s, to_s, stream, how)
    click.echo(f"feedback {r.id}: {r.meta['frames']} frames of {Path(r.meta['source']).name} ({r.meta['from_s']:.1f}-{r.meta['to_s']:.1f} s) "
               f"recorded as normal; `cli.py train --update --work {work}` absorbs it")  # fmt: skip


@feedback_group.command("list")
@work_option
def feedback_list(work):
    """The stretches recorded as normal, and whether the models in use hold them."""
    from cuboid_ad.pipeline.stages import feedback

    records = feedback.list_feedback(work)
    held = feedback.absorbed_ids(work)
    if not records:
        click.echo("no feedback recorded")
    for r in records:
        m = r.meta
        click.echo(f"{r.id}  {m['created']}  {Path(m['source']).name} {m['from_s']:.1f}-{m['to_s']:.1f} s  {m['frames']} frames  "
                   f"{'absorbed' if r.id in held else 'not absorbed yet'}  ({m['how']})")  # fmt: skip


@feedback_group.command("undo")
@click.argument("feedback_id")
@work_option
def feedback_undo(feedback_id, work):
    """Forget a recorded stretch; the next `train --update` makes the models without it."""
    from cuboid_ad.pipeline.stages import feedback

    with feedback_lock(work):
        r = feedback.undo_feedback(work, feedback_id)
    click.echo(f"feedback {r.id} forgotten; `cli.py train --update --work {work}` makes the models without it")


@feedback_group.command("apply")
@work_option
@jobs_option
@device_option
@run_options
def feedback_apply(work, jobs, device):
    """Absorb every recorded stretch into the models (the same as `train --update`)."""
    from cuboid_ad.pipeline.stages import feedback

    with feedback_lock(work):
        _print_update(feedback.update_models(work, device=device, jobs=jobs))


@cli.command()
@click.argument("video", type=click.Path(path_type=Path))
@work_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: WORK/scores/<clip name>].")
@config_option
@preset_option
@click.option("--heatmaps", is_flag=True, help="Also write PNG heatmaps of the strongest anomalous frames.")
@click.option("--no-maps", is_flag=True, help="Skip maps.h5 (per-pixel maps); scores.csv only.")
@damaged_option
@stream_option
@device_option
@run_options
def score(video, work, out, config_path, preset, heatmaps, no_maps, allow_damaged, stream, device):
    """Score VIDEO (a file or a frame folder) with the models in WORK.

    Writes OUT/scores.csv (one row per frame: score, anomalous flag, each
    region's score), OUT/events.csv (the alarms: flagged stretches merged and
    filtered by score.min_event_seconds and score.event_gap_seconds) and
    OUT/maps.h5 (anomaly maps), and prints the events with their times and regions.
    """
    from cuboid_ad.core.runtime import resolve_device
    from cuboid_ad.core.workdir import WorkDir
    from cuboid_ad.pipeline.stages.score import score_video

    wd = WorkDir(work)
    out = out or wd.scores_for(video)
    if heatmaps and no_maps:
        raise click.UsageError("--heatmaps needs the maps: drop --no-maps")
    with work_lock(work, exclusive=False):
        result = score_video(video, wd.models, out, _optional_config(config_path, preset), maps=not no_maps,
                             device=resolve_device(device), allow_damaged=allow_damaged, stream=stream)
    _print_events(result)
    if heatmaps:
        from cuboid_ad.pipeline.views.heatmaps import write_heatmaps  # matplotlib takes 0.5 s to import: only when asked

        written = write_heatmaps(out / "maps.h5", video, out / "heatmaps")
        click.echo(f"heatmaps: {len(written)} PNG files in {out / 'heatmaps'}")


@cli.command("watch")
@click.argument("source")
@work_option
@click.option("--camera", default=None, help="Camera name in messages and file names [default: from SOURCE].")
@click.option("--events", "events_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Append the JSON Lines messages to this file [default: standard output].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Daily score files, event snapshots and clips [default: WORK/live/<camera>].")
@click.option("--max-seconds", type=click.FloatRange(0, None, min_open=True), default=None, help="Stop after this long [default: never].")
@click.option("--realtime", is_flag=True, help="Read a file at its own frame rate, as a camera delivers it (else as fast as possible).")
@click.option("--mqtt", default=None, metavar="HOST:PORT", help="Also publish to this MQTT broker (topics under live.mqtt_prefix).")
@click.option("--webhook", default=None, metavar="URL", help="Also POST each message as JSON to this URL.")
@config_option
@preset_option
@device_option
@run_options
def watch_cmd(source, work, camera, events_path, out, max_seconds, realtime, mqtt, webhook, config_path, preset, device):
    """Score a live SOURCE as it arrives with the models in WORK and emit events as JSON Lines.

    \b
    SOURCE: a camera URL (rtsp://, rtmp://, http(s)://, tcp://, udp://, srt://),
    a V4L2 device (/dev/video0), - for a stream on standard input, or a file.

    Messages (one JSON object a line): status (online, stalled, reconnecting,
    offline) and events: new, update, end (with a snapshot PNG of the peak and
    an MP4 clip). A stalled stream is restarted after live.stall_seconds; a lost
    one is reconnected with a growing wait. Ends at the end of a file or stdin,
    after --max-seconds, or on Ctrl-C / SIGTERM (an open event gets its end).
    """
    from cuboid_ad.core.runtime import resolve_device
    from cuboid_ad.core.workdir import WorkDir
    from cuboid_ad.pipeline.live.watch import camera_name, watch

    wd = WorkDir(work)
    camera = camera or camera_name(source)
    out = out or wd.live_for(camera)
    with work_lock(work, exclusive=False):
        summary = watch(source, wd.models, out, _optional_config(config_path, preset), camera=camera, events_path=events_path,
                        max_seconds=max_seconds, realtime=realtime, mqtt=mqtt, webhook=webhook, device=resolve_device(device))
    click.echo(f"watch {summary.camera}: {summary.frames} frames scored in {summary.seconds:.1f} s, {summary.events} events, {summary.tampers} tamper events, "
               f"{summary.dropped} frames dropped, {summary.reconnects} reconnections, {summary.cpu_seconds:.1f} CPU seconds -> {summary.out_path}"
               + (f" ({summary.messages_dropped} webhook messages dropped)" if summary.messages_dropped else ""),
               err=True)  # fmt: skip


@cli.command("serve")
@work_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; anything but loopback lets other machines in.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="TCP port to listen on.")
@config_option
@preset_option
@device_option
@run_options
def serve_cmd(work, host, port, config_path, preset, device):
    """A local web app over the models in WORK: upload a video, follow its scoring, open its report.

    Uploads and reports are kept in WORK/web/. The JSON API (POST /api/jobs,
    GET /api/jobs/ID, GET /api/videos) is described in the README.
    """
    import uvicorn

    from cuboid_ad.core.runtime import resolve_device
    from cuboid_ad.pipeline.views.webapp import make_app

    app = make_app(work, _optional_config(config_path, preset), resolve_device(device))
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"WARNING: listening on {host}: anyone who can reach this machine can upload videos and read every report "
                   "in this work folder; there is no login", err=True)  # fmt: skip
    click.echo(f"serve: http://{host}:{port}/  (Ctrl-C stops)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _print_events(result) -> None:
    events = result.events
    n = result.n_frames
    click.echo(
        f"{result.source.name}: {n} frames ({result.duration:.1f} s at {result.fps:.3g} fps) scored at {n / result.seconds:.1f} frames/s; "
        f"{int(result.anomalous.sum())} anomalous frames, {len(events)} event{'' if len(events) == 1 else 's'} -> {result.out_path}"
    )
    for e in events[:20]:
        regions = ", ".join(e.regions[:4]) + (" ..." if len(e.regions) > 4 else "")
        click.echo(f"  event: frames {e.first + 1}-{e.last + 1}  {e.start_s:.1f}-{e.end_s:.1f} s  "
                   f"peak {e.peak_score:.1f} at {e.peak_s:.1f} s  regions {regions}")  # fmt: skip
    if len(events) > 20:
        click.echo(f"  ... {len(events) - 20} more events in events.csv")
    for e in result.tampers:
        click.echo(f"  tamper: camera {' then '.join(e.regions)}  frames {e.first + 1}-{e.last + 1}  {e.start_s:.1f}-{e.end_s:.1f} s  "
                   "(no anomaly is flagged while the view is wrong)")  # fmt: skip


@cli.command()
@data_option(required=True)
@work_option
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Frame labels [default: DATA/labels.json].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="[default: WORK/eval]")
@config_option
@preset_option
@damaged_option
@stream_option
@device_option
@scheduler_option
@run_options
def evaluate(data, work, labels, out, config_path, preset, allow_damaged, stream, device, scheduler):
    """Score every clip of DATA/test and compare with the frame labels.

    Prints and writes OUT/metrics.json: frame-level ROC AUC of raw scores over
    all frames pooled (the headline), AUC after per-clip min-max normalisation
    (as many papers report), per-clip AUC, average precision, equal error rate,
    the confusion matrix at the alarm threshold, and the events: false alarms
    per minute of normal video and the labelled anomalous segments they hit.
    """
    from cuboid_ad.core.cluster import connect
    from cuboid_ad.core.runtime import resolve_device
    from cuboid_ad.core.workdir import WorkDir
    from cuboid_ad.pipeline.stages.evaluate import evaluate as run_evaluate

    wd = WorkDir(work)
    out = out or wd.eval
    with work_lock(work, exclusive=False), connect(scheduler, [work], warm_modules=(run_evaluate.__module__,)) as cluster:
        metrics = run_evaluate(data / "test", labels or data / "labels.json", wd.models, out, _optional_config(config_path, preset),
                               device if cluster else resolve_device(device), allow_damaged, stream, cluster)
    click.echo(format_metrics(metrics))
    click.echo(f"metrics: {out / 'metrics.json'}")


@cli.group()
def fleet() -> None:
    """Many cameras at once: every camera's stages and regions as one Dask task graph.

    \b
    FLEET is a TOML file naming each camera's folders:
      [cameras.lobby]
      data = "cams/lobby"        # train/, test/, labels.json
      work = "work/lobby"
      config = "lobby.toml"      # optional
      videos = "cams/lobby/new"  # optional, for `fleet score` [default: DATA/test]

    Without --scheduler, a Dask cluster is started on this machine for the
    run. A camera with bad input fails alone; the table at the end says why.
    See docs/cluster.md.
    """


def _fleet_command(name: str, summary: str) -> None:
    """Register ``fleet NAME``: the three fleet commands differ only in the graph they submit."""

    @fleet.command(name, help=summary)
    @click.argument("fleet_file", metavar="FLEET", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--workers", type=click.IntRange(0, None), default=0, show_default="0 = one per core",
                  help="Worker processes of the cluster started on this machine (without --scheduler).")
    @click.option("--threads", type=click.IntRange(0, None), default=0, show_default="0 = the worker's share of its cores",
                  help="Torch threads per task; fixing it makes the weights the same on any machine.")
    @device_option
    @scheduler_option
    @run_options
    def command(fleet_file, workers, threads, device, scheduler):
        from cuboid_ad.core.cluster import connect, local_cluster
        from cuboid_ad.pipeline.scale.fleet import format_results, load_fleet, run_fleet

        cameras = load_fleet(fleet_file)
        with contextlib.ExitStack() as stack:
            address = scheduler or stack.enter_context(local_cluster(workers))
            cluster = stack.enter_context(connect(address, [c.work for c in cameras], warm_modules=(run_fleet.__module__,)))
            results = run_fleet(name, cameras, cluster, device=device, threads=threads)
        click.echo(format_results(results))
        failed = [r.camera.name for r in results if r.error]
        if failed:
            raise UserError(f"{len(failed)} of {len(results)} cameras failed: {', '.join(failed)}")


_fleet_command("train", "Extract, slice and train every camera of FLEET (what is up to date is skipped).")
_fleet_command("evaluate", "Score every camera's DATA/test against its labels; one line of metrics per camera.")
_fleet_command("score", "Score every camera's videos (its `videos` folder, else DATA/test) with its models, maps included.")


def format_metrics(m: dict) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    t = m["at_threshold"]
    lines = [
        f"frames: {m['n_frames']} ({m['n_anomalous_frames']} anomalous) in {len(m['clips'])} clips",
        f"frame AUC, raw scores, all frames pooled:   {f(m['auc_pooled_raw'])}",
        f"frame AUC, per-clip min-max normalised:     {f(m['auc_pooled_minmax_per_clip'])}",
        f"frame AUC, mean of per-clip AUCs:           {f(m['auc_per_clip_mean'])}",
        f"average precision:                          {f(m['average_precision'])}",
        f"equal error rate:                           {f(m['equal_error_rate'])}",
        f"at the alarm threshold ({m['threshold']:.2f}): false-alarm rate {f(t['false_alarm_rate'])} of normal frames, "
        f"detection rate {f(t['detection_rate'])} of anomalous frames",
        f"  confusion: TP {t['tp']}  FP {t['fp']}  TN {t['tn']}  FN {t['fn']}",
    ]
    e = m.get("events")
    if e:
        lines.append(
            f"events: {e['n_events']}; false alarms {e['false_alarm_events']} ({f(e['false_alarm_events_per_minute'])} per minute of normal video); "
            f"labelled anomalous segments hit {e['segments_hit']} of {e['anomalous_segments']}"
        )
    return "\n".join(lines)


@cli.command()
@click.argument("video", type=click.Path(path_type=Path))
@work_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding (or to hold) scores.csv and maps.h5 [default: WORK/scores/<clip name>].")
@click.option("--frames", default=None, help="Comma-separated frame numbers (1-based) to draw [default: the strongest anomalous peaks].")
@click.option("--top", type=int, default=6, show_default=True, help="How many peak frames to draw when --frames is not given.")
@damaged_option
@stream_option
@device_option
@run_options
def heatmap(video, work, out, frames, top, allow_damaged, stream, device):
    """Draw PNG heatmaps of VIDEO: chosen frames with their anomaly maps, and the regions x time matrix.

    Uses OUT/maps.h5 from an earlier `score` of the same clip, or scores the clip first.
    """
    from cuboid_ad.core.runtime import resolve_device
    from cuboid_ad.core.workdir import WorkDir
    from cuboid_ad.pipeline.views.heatmaps import heatmaps_of

    wd = WorkDir(work)
    try:
        wanted = [int(x) for x in frames.split(",")] if frames else None
    except ValueError:
        raise click.BadParameter("use frame numbers like 12,40,97", param_hint="--frames") from None
    with work_lock(work, exclusive=False):
        written = heatmaps_of(video, wd.models, out or wd.scores_for(video), wanted, top, resolve_device(device), allow_damaged, stream)
    for p in written:
        click.echo(str(p))


@cli.command("report")
@click.argument("video", type=click.Path(path_type=Path))
@work_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: WORK/scores/<clip name>].")
@click.option("--labels", "labels_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="labels.json with this clip's anomalous frames, shaded on the timeline.")
@click.option("--gallery", type=click.IntRange(0, 50), default=6, show_default=True, help="How many top frames to show.")
@damaged_option
@stream_option
@device_option
@run_options
def report_cmd(video, work, out, labels_path, gallery, allow_damaged, stream, device):
    """Score VIDEO and write OUT/report.html: timeline, side-by-side video, regions x time, gallery, summary.

    The page needs no network: everything is inline except the video,
    OUT/report.mp4 (H.264), which sits beside it. Click the timeline, a
    segment or a gallery frame to seek the video there.
    """
    from cuboid_ad.core.runtime import resolve_device
    from cuboid_ad.core.workdir import WorkDir
    from cuboid_ad.pipeline.views.report import report

    wd = WorkDir(work)
    out = out or wd.scores_for(video)
    with work_lock(work, exclusive=False):
        made = report(video, wd.models, out, labels_path, device=resolve_device(device), n_gallery=gallery, allow_damaged=allow_damaged, stream=stream)
    _print_events(made.result)
    click.echo(f"report: {made.html}")


@cli.command()
@data_option(required=True)
@work_option
@config_option
@preset_option
@click.option("--clips", default=None, help="Comma-separated labelled clip ids to train on (the others are left out), e.g. for cross-validation.")
@force_option
@damaged_option
@device_option
@run_options
def supervise(data, work, config_path, preset, clips, force, allow_damaged, device):
    """Train a classifier on labelled clips: WORK/classifier/ (model, metrics.json, confusion.png).

    \b
    Labels come from DATA/classes/<name>/ (clips of one class each, a normal/
    folder among them: multi-class) or else from DATA/labels.json over
    DATA/test's clips (anomalous frame ranges: binary), with DATA/train's clips as
    normal. A 3D CNN with spatial attention learns windows of T whole frames
    ([supervise]); whole clips are held out for validation and early stopping.
    A killed run resumes from its last epoch.
    """
    import threading

    from cuboid_ad.core.runtime import resolve_device, sigint_sets
    from cuboid_ad.pipeline.stages.supervise import supervise as run_supervise

    cfg = _config(config_path, preset)
    wanted = [c.strip() for c in clips.split(",") if c.strip()] if clips else None
    stop = threading.Event()
    with work_lock(work, exclusive=True), sigint_sets(stop):
        m = run_supervise(data, work, cfg, wanted, resolve_device(device), force, allow_damaged, stop)
    click.echo(format_classification(m))
    click.echo(f"classifier: {Path(work) / 'classifier'}")


def format_classification(m: dict) -> str:
    lines = [
        f"on the {m['split']} ({m['n_frames']} frames): accuracy {m['accuracy']:.3f}, balanced accuracy {m['balanced_accuracy']:.3f}"
        + (f", ROC AUC (anomalous vs normal) {m['auc_anomalous']:.3f}" if m.get("auc_anomalous") is not None else ""),
    ]
    for c, v in m["per_class"].items():
        lines.append(f"  {c:<12} precision {v['precision']:.3f}  recall {v['recall']:.3f}  F1 {v['f1']:.3f}  ({v['support']} frames)")
    return "\n".join(lines)


@cli.command()
@click.argument("video", type=click.Path(path_type=Path))
@work_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: WORK/scores/<clip name>].")
@click.option("--heatmaps", type=click.IntRange(0, 50), default=0, show_default=True,
              help="Also draw this many frames, the most likely anomalous, with the attention map over them.")
@damaged_option
@stream_option
@device_option
@run_options
def classify(video, work, out, heatmaps, allow_damaged, stream, device):
    """Classify every frame of VIDEO with WORK's classifier (see `supervise`).

    Writes OUT/classes.csv (per frame: predicted class and every class's
    probability, from the window of frames up to it) and OUT/attention.h5 (where
    the classifier looked), and prints the segments of a class other than normal.
    """
    from cuboid_ad.core.runtime import resolve_device
    from cuboid_ad.core.workdir import WorkDir
    from cuboid_ad.pipeline.stages.supervise import classify_video

    out = out or WorkDir(work).scores_for(video)
    with work_lock(work, exclusive=False):
        r = classify_video(video, work, out, resolve_device(device), allow_damaged, stream, heatmaps)
    counts = ", ".join(f"{c} {int((r.predicted == k).sum())}" for k, c in enumerate(r.classes))
    click.echo(f"{r.source.name}: {len(r.times)} frames classified ({counts}); {len(r.segments)} segments -> {out}")
    for a, b, c, p in r.segments[:20]:
        click.echo(f"  {c}: frames {a + 1}-{b + 1}  {r.times[a]:.1f}-{r.times[b] + 1 / r.fps:.1f} s  mean p {p:.2f}")
    if len(r.segments) > 20:
        click.echo(f"  ... {len(r.segments) - 20} more in classes.csv")


@cli.command("config")
@config_option
@preset_option
def show_config(config_path, preset):
    """Print the effective config as TOML (defaults, preset, then --config on top)."""
    from cuboid_ad.core.config import to_toml

    try:
        click.echo(to_toml(_config(config_path, preset)), nl=False)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command("demo-data")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to create.")
@click.option("--size", default="240x160", show_default=True, help="WIDTHxHEIGHT of the clips.")
@click.option("--frames", "frames_per_clip", type=int, default=150, show_default=True, help="Frames per clip.")
@click.option("--train-clips", type=click.IntRange(1, 100), default=6, show_default=True, help="Normal clips in OUT/train/.")
@click.option("--classes", "clips_per_class", type=click.IntRange(0, 100), default=4, show_default=True,
              help="Also write OUT/classes/{normal,fast,place,shape}/ with this many clips each, for `supervise` (0: none).")
@run_options
def demo_data(out, size, frames_per_clip, train_clips, clips_per_class):
    """Write the built-in synthetic example: OUT/train/, OUT/test/, OUT/labels.json.

    Normal clips show objects moving along fixed paths at steady speed; each
    test clip adds one labelled anomaly: a much faster object, an object where
    none ever goes, an unusual shape.
    """
    from cuboid_ad.pipeline.media.synthetic import make_classes, make_dataset

    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise click.BadParameter("use WIDTHxHEIGHT, e.g. 240x160", param_hint="--size") from None
    make_dataset(out, width=width, height=height, n_train=train_clips, frames_per_clip=frames_per_clip)
    if clips_per_class:
        make_classes(out, width=width, height=height, clips_per_class=clips_per_class)
    click.echo(f"demo data: {out}/train ({train_clips} clips), {out}/test, {out}/labels.json"
               + (f", {out}/classes ({clips_per_class} clips of each class)" if clips_per_class else ""))


def main() -> None:
    cli(prog_name="cuboid-ad")


if __name__ == "__main__":
    main()
