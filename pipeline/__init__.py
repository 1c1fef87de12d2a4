"""FFmpeg in, orchestration of the stages, and what the user sees (scores, heatmaps)."""
