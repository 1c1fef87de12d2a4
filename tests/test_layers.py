"""Imports point one way, like floors of a house (README, Layout).

core (the foundation) imports nothing of ours from above; cuboids and ensemble,
the two libraries, import only core and never each other; pipeline (the stage
drivers) imports the three; cli.py and bench/ sit on top. Read from the source
with ``ast``: every import counts, at the top of a module, inside a function, or
under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOR = {"core": 0, "cuboids": 1, "ensemble": 1, "pipeline": 2, "cli": 3, "bench": 3}


def our_imports(source: str) -> list[str]:
    """Top-level names of every module ``source`` imports that is one of ours."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    return [n for n in names if n in FLOOR]


def violations(package: str, source: str) -> list[str]:
    """Imports of ``source`` (a module of ``package``) that reach a floor above or beside its own."""
    return [name for name in our_imports(source) if name != package and FLOOR[name] >= FLOOR[package]]


def modules() -> list[tuple[str, Path]]:
    found = [("cli", ROOT / "cli.py")]
    for package in FLOOR:
        if (ROOT / package).is_dir():
            found += [(package, p) for p in sorted((ROOT / package).rglob("*.py"))]
    return found


def test_no_module_imports_upwards_or_sideways():
    bad = []
    for package, path in modules():
        for name in violations(package, path.read_text(encoding="utf-8")):
            bad.append(f"{path.relative_to(ROOT)} (floor {FLOOR[package]}) imports {name} (floor {FLOOR[name]})")
    assert not bad, "imports against the floors:\n" + "\n".join(bad)
    assert len(modules()) > 30, "the walk found too few modules to mean anything"


def test_the_check_catches_an_upward_a_sideways_and_a_hidden_import():
    assert violations("core", "from pipeline.score import score_video\n") == ["pipeline"]
    assert violations("cuboids", "import ensemble.model\n") == ["ensemble"]
    hidden = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipeline.train import x\ndef f():\n    from cli import main\n"
    assert violations("ensemble", hidden) == ["pipeline", "cli"]
    assert violations("pipeline", "from core.config import Config\nfrom cuboids.store import load_region\nimport numpy\n") == []
