"""No import cycle between edged's packages, lazy imports inside functions included.

Every ``import`` and ``from ... import`` statement anywhere in every module of edged/ (module
level, inside functions, under ``if TYPE_CHECKING``) is an edge from the importing package to the
imported one. A package is a subpackage (``edged.engine``) or a top-level module
(``edged.daemon``). ``edged.cli`` is the one exception: it wires everything together, so its
imports are left out (nothing below may import it).

The layering this keeps: engine > tasks > backends > config (the engine builder asks the task
registry how to calibrate); mqtt > config; every package > errors.
"""

import ast
import os
from typing import Dict, List, Set, Tuple

import pytest

from .conftest import REPO

PACKAGE = "edged"
#: Packages whose imports are not edges: the command line imports everything by design.
TOP_LEVEL_ONLY = {"edged.cli", "edged.__main__"}

#: Edges in files other branches are changing this session; each closes a cycle named in its
#: reason. The strict xfail below turns green (and fails) as soon as the edge is gone, so the
#: entry must then be removed.
PENDING_EDGES = {}  # type: Dict[Tuple[str, str], str]

Edge = Tuple[str, str]
Where = Dict[Edge, List[str]]


def _module_name(path: str) -> Tuple[str, bool]:
    rel = os.path.relpath(path, REPO)[: -len(".py")].replace(os.sep, ".")
    if rel.endswith(".__init__"):
        return rel[: -len(".__init__")], True
    return rel, False


def _is_module(name: str) -> bool:
    rel = os.path.join(REPO, *name.split("."))
    return os.path.isdir(rel) or os.path.isfile(rel + ".py")


def _package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _imported(node: ast.AST, module: str, is_package: bool) -> List[str]:
    """The edged modules an import statement in ``module`` loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    # `from edged import sdnotify` loads the module edged.sdnotify; `from edged import
    # __version__` only the package edged.
    names = [f"{source}.{alias.name}" for alias in node.names]
    return [source] + [n for n in names if _is_module(n)]


def import_edges() -> Where:
    """Package-level edges of edged/, each with the ``file:line`` of its import statements."""
    where: Where = {}
    for folder, _, files in os.walk(os.path.join(REPO, PACKAGE)):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            module, is_package = _module_name(path)
            source = _package_of(module)
            if source in TOP_LEVEL_ONLY:
                continue
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            for node in ast.walk(tree):
                for target in _imported(node, module, is_package):
                    if target != PACKAGE and not target.startswith(PACKAGE + "."):
                        continue
                    dest = _package_of(target)
                    if dest not in (source, PACKAGE):
                        line = f"{os.path.relpath(path, REPO)}:{node.lineno}"
                        where.setdefault((source, dest), []).append(line)
    return where


def cycles(edges: Set[Edge]) -> List[List[str]]:
    """The strongly connected components of more than one package (Tarjan), sorted."""
    graph: Dict[str, Set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def describe(component: List[str], where: Where) -> str:
    inner = sorted(e for e in where if e[0] in component and e[1] in component)
    lines = [" <-> ".join(component)]
    for a, b in inner:
        lines.append(f"  {a} -> {b}: {', '.join(where[(a, b)])}")
    return "\n".join(lines)


def test_the_scan_sees_lazy_imports():
    """The scanner finds imports inside functions (edged.cli.infer imports its task loader
    lazily) and resolves relative imports to packages."""
    where = import_edges()
    assert ("edged.daemon", "edged.tasks") in where
    assert any("edged/engine/manager.py" in w for w in where[("edged.engine", "edged.backends")])
    assert ("edged.engine", "edged.tasks") in where  # calibration asks the task registry


def test_no_import_cycle_between_packages():
    where = import_edges()
    edges = set(where) - set(PENDING_EDGES)
    found = cycles(edges)
    assert not found, "import cycles between packages:\n" + "\n".join(
        describe(c, where) for c in found
    )


@pytest.mark.parametrize(
    "edge",
    [
        pytest.param(edge, marks=pytest.mark.xfail(strict=True, reason=reason))
        for edge, reason in PENDING_EDGES.items()
    ],
    ids=["->".join(e) for e in PENDING_EDGES],
)
def test_pending_edge_is_gone(edge):
    """Fails while the edge exists (xfail); passes, and so fails strictly, once it is removed."""
    where = import_edges()
    assert edge not in where, f"{edge[0]} -> {edge[1]}: {', '.join(where[edge])}"
