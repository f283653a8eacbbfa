"""The package's import graph follows the layers of docs/architecture.md.

Every module of ``splitsde`` is parsed with :mod:`ast` (nothing is imported); every import,
at module level or inside a function, is an edge ``importer -> imported module``. Layers, lowest
first: base, symbolic, compose, runtime, domain (analysis, diffusion, backends, interop,
langevin, problems), apps; the package root (the public facade) sits above them all. The test
fails on

* a back edge: a module importing a module of a higher layer, or the root facade;
* a cycle in the module graph (reported as the list of modules around it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "splitsde"

#: Layer of each module, by the longest matching prefix of its dotted name: the folder is the
#: layer (``base/``, ``symbolic/``, ``compose/``, ``runtime/``, the domain packages, ``apps/``).
LAYERS: dict[str, int] = {
    # 0 base
    "splitsde.base": 0,
    "splitsde._version": 0,
    # 1 symbolic
    "splitsde.symbolic": 1,
    # 2 compose
    "splitsde.compose": 2,
    # 3 runtime
    "splitsde.runtime": 3,
    # 4 domain
    "splitsde.analysis": 4,
    "splitsde.diffusion": 4,
    "splitsde.backends": 4,
    "splitsde.interop": 4,
    "splitsde.langevin": 4,
    "splitsde.problems": 4,
    # 5 apps
    "splitsde.apps": 5,
    "splitsde.__main__": 5,
    # the public facade: above everything, imported by nothing inside the package
    "splitsde": 6,
}
NAMES = ["base", "symbolic", "compose", "runtime", "domain", "apps", "facade"]

#: Known cycles, by their modules: none left. A cycle fails the test; if one must be tolerated
#: for a while, list it here (the list may only shrink: a listed cycle that no longer exists
#: fails too).
KNOWN_CYCLES: set[frozenset[str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` refers to: itself, or its package for ``from pkg import attr``."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(mod: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``mod`` imports, anywhere in its body."""
    is_pkg = path.name == "__init__.py"
    package = mod if is_pkg else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # ``from pkg import sub``: the submodule when it is one, else the package itself
            targets = [f"{prefix}.{a.name}" for a in node.names if a.name != "*"] or [prefix]
            targets = [t if t in modules else prefix for t in targets]
        else:
            continue
        for t in targets:
            if t == "splitsde" or t.startswith("splitsde."):
                found = _resolve(t, modules)
                if found is not None and found != mod:
                    out.add(found)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def layer_of(mod: str) -> int:
    # the root entry is the facade module itself, not a prefix of every module
    prefixes = (p for p in LAYERS if mod == p or (p != "splitsde" and mod.startswith(p + ".")))
    best = max(prefixes, key=len, default=None)
    if best is None:
        raise AssertionError(f"module {mod} has no layer: add its prefix to LAYERS")
    return LAYERS[best]


def _components(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(comps, key=min)


def _one_cycle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError("unreachable: a strongly connected component has a cycle")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    return [_one_cycle(graph, c) for c in _components(graph)]


def test_every_module_has_a_layer():
    for mod in _modules():
        layer_of(mod)


def test_the_folder_is_the_layer():
    """Only the facade, ``__main__`` and the version live at the package root; every other
    module sits in its layer's folder, so the layout shows the layers."""
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "_version.py"], top
    for mod in _modules():
        if mod.count(".") >= 1 and mod not in ("splitsde.__main__", "splitsde._version"):
            folder = ".".join(mod.split(".")[:2])
            assert folder in LAYERS, f"{mod} is in a folder with no layer: {folder}"


def test_no_import_goes_up_a_layer():
    graph = _graph()
    bad = []
    for mod, deps in sorted(graph.items()):
        for dep in sorted(deps):
            if dep == "splitsde" or layer_of(dep) > layer_of(mod):
                lm, ld = NAMES[layer_of(mod)], NAMES[layer_of(dep)]
                bad.append(f"{mod} ({lm}) imports {dep} ({ld})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_the_module_graph_has_no_new_cycle():
    graph = _graph()
    comps = _components(graph)
    # a cycle is tolerated only inside a known one (which may shrink or split, never grow)
    new = [
        f"{sorted(c)}: {' -> '.join(_one_cycle(graph, c))}"
        for c in comps
        if not any(c <= known for known in KNOWN_CYCLES)
    ]
    assert not new, "import cycles (modules, then one cycle through them):\n" + "\n".join(new)
    gone = [sorted(k) for k in KNOWN_CYCLES if not any(c & k for c in comps)]
    assert not gone, f"cycles no longer present, remove them from KNOWN_CYCLES: {gone}"


@pytest.mark.parametrize(
    "graph, cycle",
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b", "c"}, "b": {"a"}, "c": {"b"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": set()}, None),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, cycle):
    found = _cycles(graph)
    assert found == ([cycle] if cycle else [])


def test_the_import_walk_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "splitsde"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from . import b\n    from ..c import x\n")
    (pkg / "sub" / "b.py").write_text("")
    (pkg / "c.py").write_text("x = 1\n")
    modules = {_module_name_in(pkg, p): p for p in pkg.rglob("*.py")}
    got = _imports("splitsde.sub.a", pkg / "sub" / "a.py", modules)
    assert got == {"splitsde.sub.b", "splitsde.c"}


def _module_name_in(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)
