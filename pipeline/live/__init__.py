"""Watching a live camera: the feed, the scoring loop, each event's lifecycle and clip, what is kept on disk, where messages go."""
