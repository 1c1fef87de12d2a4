"""Benchmarks: detection quality on a labelled dataset, speed and memory. Not imported by the product."""
