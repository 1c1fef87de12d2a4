"""Where each stage's files live inside a work folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WorkDir:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def frames(self) -> Path:
        return self.root / "frames"

    @property
    def cuboids(self) -> Path:
        return self.root / "cuboids"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    def scores_for(self, video: str | Path) -> Path:
        """Default output folder of `score VIDEO`: named after the clip."""
        video = Path(video)
        return self.root / "scores" / (video.stem if video.suffix else video.name)

    def live_for(self, camera: str) -> Path:
        """Default output folder of `watch --camera NAME`: daily score files and event snapshots and clips."""
        return self.root / "live" / camera
