"""Slicing frames into a grid of regions x time windows, and the per-region HDF5 store."""
