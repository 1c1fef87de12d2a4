"""ffmpeg in and out: decoding clips and live streams into frames, encoding frames into MP4s, helper threads, the demo's synthetic scene."""
