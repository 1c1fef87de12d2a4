"""Writing and reading artifacts safely, and the one registry of artifact kinds.

Every file the chain writes appears under its final name only when complete
(written to a hidden temporary name beside it, then atomically renamed), and
records what made it: its kind and format version, the config, and its inputs.
Readers refuse a missing, truncated, foreign, older-format or
differently-configured file with a message that says what to do.

:data:`KINDS` is the only list of which config sections each kind of artifact
depends on; every reader checks a recorded config through it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from cuboid_ad.core.config import Config, config_differences
from cuboid_ad.core.errors import ArtifactError, UserError

APP = "cuboid-ad"


@dataclass(frozen=True)
class ArtifactKind:
    """A kind of file the chain writes.

    ``sections``: config sections whose change makes the file stale (it must be
    made again). ``recalibrate``: sections whose change only needs the normal
    statistics recomputed, not the file remade from scratch.
    """

    name: str
    version: int
    sections: tuple[str, ...]
    recalibrate: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        return f"{APP}/{self.name}"

    @property
    def all_sections(self) -> tuple[str, ...]:
        return self.sections + self.recalibrate


KINDS: dict[str, ArtifactKind] = {
    k.name: k
    for k in (
        ArtifactKind("frames", 2, ("extract",)),  # 2: each frame's time
        ArtifactKind("tube", 1, ("extract", "cuboids")),
        # checkpoint 2: per-cell statistics and held-out scores; 3: each stream's statistics by name (ensemble.streams);
        # the weights of versions 1 and 2 still load (train recalibrates them)
        ArtifactKind("checkpoint", 3, ("extract", "cuboids", "model", "train"), recalibrate=("score",)),
        ArtifactKind("manifest", 3, ("extract", "cuboids", "model", "train", "score")),  # 3: the streams
        ArtifactKind("classifier", 1, ("extract", "supervise")),
        ArtifactKind("attention", 1, ("extract", "supervise")),  # classify's per-frame attention maps and probabilities
        ArtifactKind("scene", 1, ("extract",)),  # the camera's normal view, for the tamper check (pipeline.scoring.tamper)
        # maps 3: each frame's time, the video stream; 4: stream_z of every stream score.streams names (attribute streams)
        ArtifactKind("maps", 4, ("extract", "cuboids", "model", "train", "score")),
    )
}


def temporary_name(path: Path) -> Path:
    """Where ``path`` is written before it is complete: hidden, beside it, named after this process
    (so that :func:`remove_stale_temporaries` knows a dead writer's)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def commit(tmp: Path, path: Path) -> None:
    """Put a complete temporary file in place under its final name, on disk first."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def new_folder(path: str | Path) -> Iterator[Path]:
    """Create ``path`` (and missing parents) for the writes inside; if they fail, remove again
    the folders this created, so that a refused input leaves nothing behind."""
    path = Path(path)
    created = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        for p in created:  # innermost first
            try:
                p.rmdir()
            except OSError:  # not empty (another writer) or already gone
                break
        raise


def remove_stale_temporaries(folder: str | Path) -> None:
    """Delete temporaries left by a process that was killed mid-write."""
    folder = Path(folder)
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp-*"):
            pid = tmp.name.rsplit(".tmp-", 1)[1].split("-")[0]
            if not pid.isdigit() or not _alive(int(pid)) or int(pid) == os.getpid():
                tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_json(path: str | Path) -> Any:
    """A JSON file the chain wrote; ArtifactError when it is missing or unreadable."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not readable JSON ({exc})") from None


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def stamp_dict(kind: str, cfg: Config) -> dict[str, Any]:
    """The stamp of an artifact of ``kind``: its format tag, version and config."""
    k = KINDS[kind]
    return {"format": k.tag, "format_version": k.version, "config": cfg.to_json()}


def stamp(attrs: h5py.AttributeManager, kind: str, cfg: Config, **extra: Any) -> None:
    """Record kind, format version, config and inputs on an HDF5 file or dataset."""
    for key, value in {**stamp_dict(kind, cfg), **extra}.items():
        attrs[key] = value


@contextmanager
def open_h5(path: str | Path, kind: str) -> Iterator[h5py.File]:
    """Open an artifact for reading, checking it is a complete file of ``kind``."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: missing; run the stage that makes it first")
    try:
        fh = h5py.File(path, "r")
    except OSError:
        raise ArtifactError(
            f"{path}: not a readable HDF5 file (truncated or foreign); delete it and re-run the stage that makes it"
        ) from None
    with fh:
        check_stamp(dict(fh.attrs), kind, path)
        yield fh


def check_stamp(attrs: dict[str, Any], kind: str, path: Path) -> None:
    """Refuse ``attrs`` unless they stamp an artifact of ``kind`` in this program's format version."""
    k = KINDS[kind]
    fmt = attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != k.tag:
        raise ArtifactError(f"{path}: not a {APP} {kind} file (format {fmt!r})")
    version = int(attrs.get("format_version", -1))
    if version != k.version:
        raise ArtifactError(
            f"{path}: {kind} format version {version}, this program reads version {k.version}; "
            "re-run the stage that makes it with --force"
        )


def recorded_config(attrs: dict[str, Any], path: Path) -> Config:
    text = attrs.get("config")
    if text is None:
        raise ArtifactError(f"{path}: records no config")
    if isinstance(text, bytes):
        text = text.decode()
    return Config.from_json(str(text), source=str(path))


def stale_sections(kind: str, recorded: Config, current: Config) -> list[str]:
    """What differs between ``recorded`` and ``current`` in the sections an artifact of ``kind`` depends on."""
    return config_differences(recorded, current, KINDS[kind].sections)


def require_config(kind: str, recorded: Config, current: Config, path: Path | str, remedy: str, with_recalibrate: bool = True) -> None:
    """Refuse an artifact of ``kind`` whose config differs from ``current`` where that kind depends on it.

    ``with_recalibrate``: also in the sections that only need its statistics recomputed.
    """
    k = KINDS[kind]
    diffs = config_differences(recorded, current, k.all_sections if with_recalibrate else k.sections)
    if diffs:
        raise ArtifactError(f"{path} was made with a different config ({'; '.join(diffs)}); {remedy}")


def source_signature(path: Path) -> dict[str, object]:
    """What identifies a clip's content cheaply: its path, byte size and mtime (folders: of every file)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        size = sum(p.stat().st_size for p in files)
        mtime = max((p.stat().st_mtime for p in files), default=path.stat().st_mtime)
    else:
        st = path.stat()
        size, mtime = st.st_size, st.st_mtime
    return {"source_path": str(path.resolve()), "source_size": int(size), "source_mtime": float(mtime)}


def is_current(path: Path, kind: str, cfg: Config, inputs: dict[str, object]) -> bool:
    """True when ``path`` is a complete, readable artifact of ``kind`` that records exactly these ``inputs``
    (what it was made from: a source's signature, the video stream, ...) and a config current for its kind.
    The one rule by which every stage decides to skip work already done."""
    path = Path(path)
    if not path.exists():
        return False
    try:
        with open_h5(path, kind) as fh:
            attrs = dict(fh.attrs)
        recorded = recorded_config(attrs, path)
    except UserError:
        return False
    return all(attrs.get(k) == v for k, v in inputs.items()) and not stale_sections(kind, recorded, cfg)
