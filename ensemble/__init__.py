"""The per-region detectors: the autoencoder, its training, the streams (ensemble.streams) it is scored by, fusion into frame scores, maps, events and metrics."""
