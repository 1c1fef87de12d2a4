"""What a person opens: heatmaps of a scored clip, the self-contained report page, the local web app (Jinja2 templates)."""
