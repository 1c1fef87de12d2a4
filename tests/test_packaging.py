"""Installing the project puts one package, cuboid_ad, in site-packages: no module named core, pipeline or cli
that would collide with another distribution's; the templates travel with it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_one_top_level_package_with_its_templates(tmp_path):
    # built from a copy of the checkout's files, so that the build leaves nothing in the checkout
    source = tmp_path / "src"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in listed:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("cuboid_ad-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"cuboid_ad"}, f"top-level names in the wheel: {sorted(tops)}"
    for needed in ("cuboid_ad/cli.py", "cuboid_ad/core/config.py", "cuboid_ad/ensemble/streams/novelty.py", "cuboid_ad/pipeline/views/templates/report.html",
                   "cuboid_ad/pipeline/views/templates/home.html"):  # fmt: skip
        assert needed in names, needed
    assert not any(n.startswith(("cuboid_ad/tests/", "cuboid_ad/bench/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "cuboid-ad = cuboid_ad.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
