"""The scoring chain as a library: one session from frames to scores, maps and events, and the files a scored clip leaves."""
