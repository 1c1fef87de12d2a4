"""Many cameras at once: every camera's stages and regions as one Dask task graph (fleet)."""
