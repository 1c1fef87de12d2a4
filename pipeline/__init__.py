"""Everything that turns videos into files a user reads, in rooms of one kind each (floors low to high):

media/     ffmpeg in and out: decoding clips and streams, encoding MP4s, helper threads, the demo's synthetic scene
pictures/  figures and video panels drawn from arrays (matplotlib, Pillow); nothing here reads a work folder
scoring/   the scoring session (frames in, scores, maps and events out) and the files a scored clip leaves
stages/    the stage drivers, files in and files out: extract, slice (cuboids), train, score, evaluate, supervise
views/     what a person opens: heatmaps, the report, the local web app
live/      watching a camera: the feed, the event lifecycle, clips, retention, message sinks
scale/     many cameras at once on a Dask cluster (fleet)
"""
