"""The suite's own rules: in CI a test that needs a real component may not skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_in_ci_a_skipped_test_that_needs_a_real_component_fails_the_run(tmp_path):
    """The hook of tests/conftest.py, run on two skipping tests: the one marked `real` fails with CUBOID_AD_REQUIRE_REAL=1."""
    (tmp_path / "test_skips.py").write_text(
        "import pytest\n\n@pytest.mark.real\ndef test_needs_a_broker():\n    pytest.skip('no broker here')\n\n"
        "def test_plain():\n    pytest.skip('just skipped')\n"
    )

    def run(require: str) -> str:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "CUBOID_AD_REQUIRE_REAL": require}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", str(tmp_path / "test_skips.py")]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300).stdout

    assert "1 failed, 1 skipped" in (out := run("1")) and "CUBOID_AD_REQUIRE_REAL=1 forbids that" in out
    assert "2 skipped" in run("0")
