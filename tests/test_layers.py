"""Imports point one way, like floors of a house (README, Code layout), module by module.

Every module of ours is named as installed (``cuboid_ad.<folder>...``). Each
package sits on a floor; a module may import its own package's modules and
those of packages on lower floors, never a higher floor nor a package beside it
on the same floor. Within a package, no two modules may import each other,
however long the circle. Read from the source with ``ast``: every import counts,
at the top of a module, inside a function, or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "cuboid_ad"
# package -> floor; a module belongs to the longest package that names it
FLOORS = {
    "core": 0,
    "ensemble.streams": 1,  # the streams a detector weighs build on core alone
    "cuboids": 2,
    "ensemble": 2,
    "pipeline.media": 3,
    "pipeline.pictures": 4,
    "pipeline.scoring": 4,
    "pipeline.stages": 5,
    "pipeline.views": 6,
    "pipeline.live": 6,
    "pipeline.scale": 6,
    "pipeline": 7,  # the package's own __init__ only
    "cli": 8,
    "bench": 8,
}
OLD_TOPS = {"core", "cuboids", "ensemble", "pipeline", "cli"}  # importable only from the checkout: a name installed code cannot use


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] == "bench":
        return ".".join(parts)
    return ".".join([PREFIX, *parts])


def package_of(module: str) -> str:
    name = module.removeprefix(PREFIX + ".")
    for pkg in sorted(FLOORS, key=len, reverse=True):
        if name == pkg or name.startswith(pkg + "."):
            return pkg
    raise KeyError(f"{module} is in no package of FLOORS: give its folder a floor")


def imports(source: str, known: set[str]) -> tuple[set[str], list[str]]:
    """(our modules ``source`` imports, imports of our code by a bare, uninstalled name)."""
    found, bare = set(), []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            if n.split(".")[0] in OLD_TOPS:
                bare.append(n)
            while n and n not in known:  # `from a.b import c` (a function) -> a.b
                n = n.rpartition(".")[0]
            if n:
                found.add(n)
    return found, bare


def graph() -> dict[str, set[str]]:
    paths = [ROOT / "cli.py", *(p for top in ("core", "cuboids", "ensemble", "pipeline", "bench") for p in sorted((ROOT / top).rglob("*.py")))]
    mods = {module_name(p): p for p in paths}
    out = {}
    for name, path in mods.items():
        found, bare = imports(path.read_text(encoding="utf-8"), set(mods))
        assert not bare, f"{path.relative_to(ROOT)} imports {', '.join(bare)}: use the installed names ({PREFIX}.…)"
        out[name] = found - {name}
    return out


def floor_violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in g.items():
        a = package_of(mod)
        for dep in deps:
            b = package_of(dep)
            if a != b and FLOORS[b] >= FLOORS[a]:
                bad.append(f"{mod} ({a}, floor {FLOORS[a]}) imports {dep} ({b}, floor {FLOORS[b]})")
    return bad


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan), each a circle of imports."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_upwards_or_sideways():
    g = graph()
    assert len(g) > 60, "the walk found too few modules to mean anything"
    bad = floor_violations(g)
    assert not bad, "imports against the floors:\n" + "\n".join(bad)


def test_no_import_circle_anywhere():
    circles = cycles(graph())
    assert not circles, "modules that import each other, in circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_every_package_has_a_floor_and_pipeline_rooms_are_one_kind():
    g = graph()
    for mod in g:
        package_of(mod)  # raises for a module of no known package
    loose = [m for m in g if package_of(m) == "pipeline" and m != f"{PREFIX}.pipeline"]
    assert not loose, f"modules directly in pipeline/, outside its rooms: {loose}"


def test_the_checks_catch_an_upward_a_sideways_a_bare_import_and_a_circle():
    known = {f"{PREFIX}.core.config", f"{PREFIX}.pipeline.stages.score", f"{PREFIX}.pipeline.live.watch", f"{PREFIX}.pipeline.views.report"}
    found, bare = imports("from cuboid_ad.pipeline.stages.score import score_video\nimport core.config\n", known)
    assert found == {f"{PREFIX}.pipeline.stages.score"} and bare == ["core.config"]
    hidden = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cuboid_ad.pipeline.live.watch import x\ndef f():\n    from cuboid_ad.pipeline.views.report import y\n"
    assert imports(hidden, known)[0] == {f"{PREFIX}.pipeline.live.watch", f"{PREFIX}.pipeline.views.report"}
    g = {
        f"{PREFIX}.core.config": {f"{PREFIX}.pipeline.stages.score"},  # upward
        f"{PREFIX}.pipeline.live.watch": {f"{PREFIX}.pipeline.views.report"},  # sideways
        f"{PREFIX}.pipeline.stages.score": {f"{PREFIX}.pipeline.stages.train"},
        f"{PREFIX}.pipeline.stages.train": {f"{PREFIX}.pipeline.stages.extract"},
        f"{PREFIX}.pipeline.stages.extract": {f"{PREFIX}.pipeline.stages.score"},  # a circle of three
        f"{PREFIX}.pipeline.views.report": set(),
    }
    assert len(floor_violations(g)) == 2
    assert cycles(g) == [sorted(f"{PREFIX}.pipeline.stages.{m}" for m in ("extract", "score", "train"))]
