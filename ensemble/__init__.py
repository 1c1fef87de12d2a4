"""The per-region autoencoders: model, training, scoring, fusion into frame scores and maps."""
