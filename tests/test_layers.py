"""The package's import graph points one way (docs/ARCHITECTURE.md):

    api (sampling, integrations, ld3, density, compose, train, models, toy, demo) -> driver, stepping -> solvers
        -> ops -> {reference, kernels, _C}

with the leaves (noise, grids, flow_time, validation, dtypes, progress, finite_watch, backends, _extension, srk_coefficients,
gaussian_law, brownian_tree) importing no other layer. Every import counts, also one inside a function; a module's import of its
own parent package (which Python runs first anyway) does not. And the walk over a grid is written once: only
`fastdiff/stepping.py` runs a step rule's generator.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LEAVES = {
    "noise", "grids", "flow_time", "validation", "dtypes", "progress", "finite_watch", "backends", "_extension",
    "srk_coefficients",
    "gaussian_law", "brownian_tree",
}
LAYERS = {"leaf": 0, "oracle": 1, "ops": 2, "solvers": 3, "driver": 4, "api": 5, "package": 6}


def modules() -> dict[str, Path]:
    """Module name -> source file, for fastdiff/ and kernels/ (installed as fastdiff.kernels)."""
    found = {}
    for path in [*(ROOT / "fastdiff").rglob("*.py"), *(ROOT / "kernels").glob("*.py")]:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[0] == "kernels":
            parts.insert(0, "fastdiff")
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    top = parts[1]
    if top in LEAVES:
        return "leaf"
    if top in ("reference", "kernels", "_C"):
        return "oracle"
    if top in ("ops", "solvers"):
        return top
    if top in ("driver", "stepping"):
        return "driver"
    return "api"


def import_edges() -> set[tuple[str, str]]:
    """(importer, imported) for every fastdiff import anywhere in a module, resolved to the nearest known module."""
    known = modules()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    edges = set()
    for module, path in known.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            for target in targets:
                imported = resolve(target) if target.startswith("fastdiff") else None
                if imported and imported != module and not module.startswith(imported + "."):
                    edges.add((module, imported))
    return edges


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read():
    edges = import_edges()
    assert ("fastdiff.driver", "fastdiff.stepping") in edges
    assert ("fastdiff.ops.solver_step", "fastdiff.reference.solver_step") in edges
    assert len(edges) > 100


def test_no_import_cycle():
    assert cycles(import_edges()) == []


def test_no_upward_import():
    upward = sorted(
        f"{a} ({layer(a)}) -> {b} ({layer(b)})" for a, b in import_edges() if LAYERS[layer(b)] > LAYERS[layer(a)]
    )
    assert upward == []


def test_the_oracle_imports_only_leaves_and_itself():
    bad = sorted(f"{a} -> {b}" for a, b in import_edges() if layer(a) == "oracle" and layer(b) not in ("leaf", "oracle"))
    assert bad == []


@pytest.mark.parametrize("edge", [("fastdiff.noise", "fastdiff.ops.philox"), ("fastdiff.driver", "fastdiff.ld3.schedule")])
def test_the_checker_flags_an_upward_edge(edge):
    assert LAYERS[layer(edge[1])] > LAYERS[layer(edge[0])]
    assert cycles({("a.x", "a.y"), ("a.y", "a.x")}) == [["a.x", "a.y"]]


def test_only_stepping_runs_step_generators():
    """A step rule's generator is started (`.step(ctx, ...)` or `step_items(...)`) in fastdiff/stepping.py alone."""
    pattern = re.compile(r"\.step\(\s*(self\.)?ctx\b|\bstep_items\(")
    runners = sorted(
        str(path.relative_to(ROOT))
        for path in modules().values()
        if pattern.search(path.read_text()) and path.name != "base.py"
    )
    assert runners == ["fastdiff/stepping.py"]
