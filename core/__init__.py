"""The foundation every other package stands on; it imports nothing of ours from above.

config (the one frozen config and its presets), errors (what users see),
artifacts (atomic writes, format stamps, the registry of artifact kinds, and
the one rule for "is this file current"), progress, lock, workdir (where files
live, clip ids), the shared vocabulary of the floors above (frames files, the
region grid, time windows, the tube codec, labels, small array helpers), and
how work runs: runtime (device, threads, Ctrl-C), snapshots (resumable
training state), cluster (Dask).
"""
