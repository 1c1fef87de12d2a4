"""Where each stage's files live inside a work folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def clip_id(path: str | Path) -> str:
    """A clip's id, which names its frames file, tubes and outputs: a video file's name without its extension, a frame folder's name."""
    path = Path(path)
    return path.name if path.is_dir() else path.stem


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

    @property
    def feedback(self) -> Path:
        """Stretches an operator marked as normal (``feedback normal``), one folder each, for ``train --update``."""
        return self.root / "feedback"

    @property
    def classifier(self) -> Path:
        """The supervised classifier's folder (`supervise`): model.pt, metrics.json, confusion.png."""
        return self.root / "classifier"

    def scores_for(self, video: str | Path) -> Path:
        """Default output folder of `score VIDEO`: named after the clip."""
        return self.root / "scores" / clip_id(video)

    def live_for(self, camera: str) -> Path:
        """Default output folder of `watch --camera NAME`: daily score files and event snapshots and clips."""
        return self.root / "live" / camera
