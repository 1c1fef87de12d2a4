"""`fleet`: the fleet file's checks, and `fleet score` on a real local Dask cluster with a camera of
each kind: one with its own `videos` folder, one whose data is missing, one whose work folder is in use."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cuboid_ad.core.errors import ConfigError
from cuboid_ad.core.lock import work_lock
from cuboid_ad.pipeline.scale.fleet import load_fleet

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 300


@pytest.mark.parametrize(
    "text, needle",
    [
        (None, "no such fleet file"),
        ("[cameras.a\n", "not a readable TOML fleet file"),
        ('camera = "a"\n[cameras.a]\ndata = "d"\nwork = "w"\n', "unknown key(s) camera; expected config and [cameras.NAME] tables"),
        ('config = "c.toml"\n', "no cameras; add a [cameras.NAME] table"),
        ('cameras = {a = "d"}\n', "cameras.a must be a table with data and work"),
        ('[cameras.a]\ndata = "d"\n', "cameras.a: missing work (keys: config, data, videos, work)"),
        ('[cameras.a]\nwork = "w"\n', "cameras.a: missing data"),
        ('[cameras.a]\ndata = "d"\nwork = "w"\nvideo = "v"\n', "cameras.a: unknown key(s) video (keys:"),
        ('[cameras.a]\ndata = "d"\nwork = "w"\n[cameras.b]\ndata = "e"\nwork = "./w"\n', "cameras a and b share the work folder"),
    ],
)
def test_every_fleet_file_error_is_one_message_naming_the_key(tmp_path, text, needle):
    path = tmp_path / "fleet.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_fleet(path)
    assert needle in str(err.value) and str(path) in str(err.value), str(err.value)


def test_fleet_paths_are_read_from_the_fleet_files_folder(tmp_path):
    (tmp_path / "f.toml").write_text('config = "all.toml"\n[cameras.a]\ndata = "cams/a"\nwork = "w/a"\nvideos = "new"\n[cameras.b]\ndata = "/srv/b"\nwork = "w/b"\nconfig = "b.toml"\n')
    a, b = load_fleet(tmp_path / "f.toml")
    assert (a.data, a.work, a.config, a.to_score) == (tmp_path / "cams/a", tmp_path / "w/a", tmp_path / "all.toml", tmp_path / "new")
    assert (b.data, b.config, b.to_score) == (Path("/srv/b"), tmp_path / "b.toml", Path("/srv/b/test"))


def test_fleet_score_scores_each_cameras_videos_and_fails_alone_the_missing_and_the_busy(tmp_path, trained_work, tiny_data):
    videos = tmp_path / "gate-today"
    videos.mkdir()
    shutil.copy(tiny_data / "test" / "01.mkv", videos / "morning.mkv")
    for name in ("gate", "busy"):
        shutil.copytree(trained_work / "models", tmp_path / "work" / name / "models")
    (tmp_path / "fleet.toml").write_text(
        f'[cameras.gate]\ndata = "{tiny_data}"\nwork = "work/gate"\nvideos = "gate-today"\n'
        '[cameras.gone]\ndata = "no-such-camera"\nwork = "work/gone"\n'
        f'[cameras.busy]\ndata = "{tiny_data}"\nwork = "work/busy"\n'
    )
    with work_lock(tmp_path / "work" / "busy", exclusive=True):  # as a `train` running there would hold it
        res = subprocess.run([sys.executable, "cli.py", "fleet", "score", str(tmp_path / "fleet.toml"), "--workers", "1", "-q"],
                             cwd=ROOT, capture_output=True, text=True, timeout=DEADLINE_S, check=False)  # fmt: skip
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1] == "error: 2 of 3 cameras failed: gone, busy", res.stderr
    rows = {line.split()[0]: line for line in res.stdout.splitlines()}
    assert " ok " in rows["gate"] and "1 video, 80 frames" in rows["gate"], res.stdout
    assert "no-such-camera/test: no such folder" in rows["gone"], res.stdout
    assert "is in use: another cuboid-ad command is writing it" in rows["busy"], res.stdout
    assert sorted(p.name for p in (tmp_path / "work" / "gate" / "scores").iterdir()) == ["morning"], "the camera's `videos`, not DATA/test"
    assert (tmp_path / "work" / "gate" / "scores" / "morning" / "scores.csv").exists()
    assert not (tmp_path / "work" / "busy" / "scores").exists()
