"""Pictures drawn from arrays: matplotlib figures (heatmaps, timelines, curves) and the report video's panels."""
