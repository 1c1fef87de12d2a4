"""The per-region streams a detector can weigh into its score: the registry.

A stream is one module of this package implementing ``base.Stream``; registering
it is one line below. ``score.streams`` names the streams a config uses and each
one's weight in a region's score (``{reconstruction = 0.5, novelty = 0.5}``): a
stream listed with weight 0 is computed and shown (maps, scores.csv, heatmaps,
report) but adds nothing to the score. Streams run in the order registered here.
"""

from __future__ import annotations

from cuboid_ad.core.config import ScoreConfig
from cuboid_ad.core.errors import ConfigError
from cuboid_ad.ensemble.streams.base import Stream
from cuboid_ad.ensemble.streams.novelty import Novelty
from cuboid_ad.ensemble.streams.reconstruction import Reconstruction

STREAMS: dict[str, Stream] = {
    s.name: s
    for s in (
        Reconstruction(),
        Novelty(),
    )
}


def register(stream: Stream) -> None:
    """Add a stream to the registry (for a stream that lives outside this package, e.g. in a test)."""
    if stream.name in STREAMS and STREAMS[stream.name] is not stream:
        raise ValueError(f"a stream named {stream.name!r} is registered already")
    STREAMS[stream.name] = stream


def unregister(name: str) -> None:
    STREAMS.pop(name, None)


def resolve(cfg: ScoreConfig) -> list[tuple[Stream, float]]:
    """The streams ``score.streams`` names, in the registry's order, each with its weight; an unknown name is refused."""
    wanted = dict(cfg.streams)
    unknown = sorted(set(wanted) - set(STREAMS))
    if unknown:
        raise ConfigError(f"score.streams names unknown stream(s) {', '.join(unknown)}; known: {', '.join(STREAMS)}")
    return [(s, wanted[name]) for name, s in STREAMS.items() if name in wanted]
