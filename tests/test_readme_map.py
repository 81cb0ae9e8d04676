"""The README's code map ("Development" -> "Code map") matches the code, so it cannot rot unseen.

Every path it names exists and imports; every ``file.py:function`` of the frame's path and every
``Class.member`` it names is defined; every thread name appears in the source as a string; and
each package line's import arrows are exactly what its modules import (lazy and TYPE_CHECKING
imports included) among the modules the map names. A failure says which README line to change.
"""

import ast
import glob
import importlib
import os
import re
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

from .conftest import REPO

SECTION = "### Code map"
PACKAGES, THREADS, FRAME = "#### Packages", "#### Threads", "#### One frame"
LEAVES = "Leaves, which any module may import"
TICKED = re.compile(r"`([^`]+)`")
PATH = re.compile(r"^edged/[\w/*.]*$")
FUNCTION = re.compile(r"^(edged/[\w/]+\.py):([\w.]+)$")
MEMBER = re.compile(r"^_?[A-Z]\w*\.\w+$")


def readme_section() -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert text.count(SECTION) == 1, "one code map in the README"
    rest = text.split(SECTION, 1)[1]
    end = re.search(r"^#{1,3} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def subsection(title: str) -> List[str]:
    text = readme_section()
    assert text.count(title) == 1, f"README code map: no {title!r} part"
    body = text.split(title, 1)[1]
    return body.split("\n#### ", 1)[0].splitlines()


def ticked(lines: List[str]) -> Iterator[str]:
    for line in lines:
        yield from TICKED.findall(line)


# -- the code ---------------------------------------------------------------------------------


def module_name(path: str) -> str:
    """``edged/mqtt/service.py`` -> ``edged.mqtt.service``; a package's ``__init__.py`` -> it."""
    name = path[: -len(".py")].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def source_files(path_glob: str) -> List[str]:
    """The .py files a map path names (a module, a glob, or a package folder and below)."""
    found = []  # type: List[str]
    for path in sorted(glob.glob(os.path.join(REPO, path_glob))):
        rel = os.path.relpath(path, REPO)
        if os.path.isdir(path):
            for root, _, files in os.walk(path):
                found += [os.path.relpath(os.path.join(root, f), REPO) for f in files
                          if f.endswith(".py")]  # fmt: skip
        elif rel.endswith(".py"):
            found.append(rel)
    return sorted(found)


ALL_FILES = source_files("edged")
ALL_MODULES = {module_name(f): f for f in ALL_FILES}


def resolve(importer: str, node: ast.AST) -> Iterator[str]:
    """The edged modules an import statement of module ``importer`` (a file path) reaches."""
    names = []  # type: List[str]
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            package = module_name(importer).split(".")
            if not importer.endswith("__init__.py"):
                package = package[:-1]
            base = package[: len(package) - (node.level - 1)]
            stem = ".".join(base + ([node.module] if node.module else []))
        else:
            stem = node.module or ""
        names = [stem + "." + a.name for a in node.names] + [stem]
    for name in names:
        while name and name not in ALL_MODULES:  # ``from . import __version__`` -> edged
            name = name.rpartition(".")[0]
        if name.startswith("edged"):
            yield name
            if isinstance(node, ast.ImportFrom):
                return  # ``from x import a, b``: the longest module reached is enough


def imports_of(path: str) -> Set[str]:
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()  # type: Set[str]
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(resolve(path, node))
    return found


def class_members() -> Dict[str, Set[str]]:
    """Class name -> its methods, class attributes and ``self.x`` attributes, over edged/."""
    members = {}  # type: Dict[str, Set[str]]
    for path in ALL_FILES:
        with open(os.path.join(REPO, path), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
            names = members.setdefault(cls.name, set())
            for node in ast.walk(cls):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(node.name)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    if isinstance(node.value, ast.Name) and node.value.id == "self":
                        names.add(node.attr)
    return members


# -- the package lines ------------------------------------------------------------------------


class PackageLine:
    def __init__(self, line: str) -> None:
        self.line = line.strip()
        left, arrow, right = line.partition("→")
        self.paths = [t for t in TICKED.findall(left) if PATH.match(t)]
        self.leaves = LEAVES in line
        self.arrows = [] if self.leaves else TICKED.findall(right) if arrow else []
        self.files = [f for p in self.paths for f in source_files(p)]

    def owns(self, module: str) -> bool:
        return ALL_MODULES.get(module) in self.files


def package_lines() -> List[PackageLine]:
    lines = [PackageLine(x) for x in subsection(PACKAGES) if x.startswith("- ")]
    assert len(lines) >= 10, "README code map: the package lines start with '- '"
    assert sum(p.leaves for p in lines) == 1, f"README code map: one line {LEAVES!r}"
    return lines


def owner(lines: List[PackageLine], module: str) -> Optional[PackageLine]:
    owners = [p for p in lines if p.owns(module)]
    assert len(owners) <= 1, f"README code map: {module} is on two lines"
    return owners[0] if owners else None


def arrow_module(name: str) -> str:
    return "edged." + name


def reaches(module: str, arrow: str) -> bool:
    target = arrow_module(arrow)
    return module == target or module.startswith(target + ".")


# -- tests ------------------------------------------------------------------------------------


def test_every_path_exists_and_imports():
    paths = [t for t in ticked(readme_section().splitlines()) if PATH.match(t)]
    assert len(paths) >= 20
    for path in paths:
        files = source_files(path)
        assert files or os.path.isdir(os.path.join(REPO, path)), f"README code map: no {path}"
        for f in files:
            if not f.endswith("__main__.py"):  # importing it runs the command
                importlib.import_module(module_name(f))


def test_every_function_of_the_frame_path_exists():
    refs = [FUNCTION.match(t) for t in ticked(subsection(FRAME))]
    refs = [m for m in refs if m]
    assert len(refs) >= 20, "the frame's path names its functions as file.py:function"
    for match in refs:
        path, qualname = match.groups()
        obj = importlib.import_module(module_name(path))
        for part in qualname.split("."):
            assert hasattr(obj, part), f"README code map: {path} has no {qualname}"
            obj = getattr(obj, part)
        assert callable(obj), f"README code map: {path}:{qualname} is not a function"


def test_every_class_member_named_exists():
    members = class_members()
    named = [t for t in ticked(readme_section().splitlines()) if MEMBER.match(t)]
    assert len(named) >= 20
    for token in named:
        cls, member = token.split(".")
        assert member in members.get(cls, ()), f"README code map: no {token} in edged/"


def thread_rows() -> List[Tuple[str, List[str]]]:
    rows = []
    for line in subsection(THREADS):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4 and not set(cells[0]) <= set("-"):
            rows.append((line, TICKED.findall(cells[0])))
    return rows


def test_every_thread_name_is_in_the_code():
    source = "\n".join(open(os.path.join(REPO, f), encoding="utf-8").read() for f in ALL_FILES)
    names = [name for _, cell in thread_rows() for name in cell]
    assert len(names) >= 15, names
    for name in names:
        if "<" in name:  # prep-<model>: "prep-" + name, or f"capture-{...}"
            pattern = "[\"']" + re.escape(name.split("<", 1)[0])
        else:
            pattern = "[\"']" + re.escape(name) + "[\"']"
        assert re.search(pattern, source), f"README thread map: no thread named {name!r} in edged/"


def test_thread_map_covers_every_worker_thread():
    names = {name for _, cell in thread_rows() for name in cell}
    assert {"prep-<model>", "infer-<model>", "post-<model>", "capture-<stream>"} <= names


def test_package_arrows_are_exactly_the_imports():
    lines = package_lines()
    leaves = next(p for p in lines if p.leaves)
    problems = []  # type: List[str]  # all of them at once: one README edit, not one per run
    for line in lines:
        assert line.paths, f"README code map: no path on {line.line!r}"
        problems += [f"no module {a!r} ({line.paths})" for a in line.arrows
                     if arrow_module(a) not in ALL_MODULES]  # fmt: skip
        used, missing = set(), set()  # type: Set[str], Set[str]
        for path in line.files:
            for module in imports_of(path):
                other = owner(lines, module)
                if other is None or other is line or other is leaves:
                    continue  # a module the map does not name, its own line, or a leaf
                hits = [a for a in line.arrows if reaches(module, a)]
                if not hits:
                    missing.add(f"{path} imports {module}")
                used.update(hits)
        if missing:
            problems.append(f"{line.paths}: add arrows: " + "; ".join(sorted(missing)))
        unused = [a for a in line.arrows if a not in used]
        if unused:
            problems.append(f"{line.paths}: nothing there imports {unused}: remove them")
    assert not problems, "README code map, package lines:\n" + "\n".join(problems)


def test_every_metric_named_is_exported():
    source = "\n".join(open(os.path.join(REPO, f), encoding="utf-8").read() for f in ALL_FILES)
    named = [t for t in ticked(readme_section().splitlines()) if t.startswith("edged_")]
    assert len(named) >= 8
    for token in named:
        family = re.sub(r"_total$", "", token.split("{", 1)[0])  # prometheus_client adds _total
        found = '"' + family + '"' in source
        assert found, f"README code map: no metric {token} in edged/"


@pytest.mark.parametrize("title", [PACKAGES, THREADS, FRAME])
def test_each_part_is_about_one_screen(title):
    assert len([x for x in subsection(title) if x.strip()]) <= 30
