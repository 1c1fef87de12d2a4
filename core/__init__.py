"""The foundation every other package stands on; it imports nothing of ours from above.

config (the one frozen config and its presets), errors (what users see),
artifacts (atomic writes, format stamps and the registry of artifact kinds),
progress, lock, workdir, and the shared vocabulary of the floors above:
frames files, the region grid, time windows, the tube codec, small array helpers.
"""
