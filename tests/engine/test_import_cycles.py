"""No import cycle anywhere in ``annt``: its modules form a directed acyclic graph.

Every import counts, module-level and inside functions or ``if TYPE_CHECKING`` blocks (a lazy
import hides a cycle, it does not remove it). ``from annt.pkg import name`` imports the module
``annt.pkg.name`` when there is one, else ``annt.pkg``; relative imports are resolved. A
failure lists each strongly connected component (each set of modules that import each other).
"""

from __future__ import annotations

import ast
from pathlib import Path

import annt

SRC = Path(annt.__file__).parent


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The ``annt`` modules one module's code imports (by the rule in this file's docstring)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in known else source)
    result = set()
    for name in found:  # ``import annt.a.b`` imports annt.a.b (the nearest existing module)
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name.startswith("annt"):
            result.add(name)
    result.discard(module)
    return result


def module_graph(src: Path = SRC) -> dict[str, set[str]]:
    paths = {module_name(p, src): p for p in sorted(src.rglob("*.py"))}
    known = set(paths)
    return {m: imports(ast.parse(p.read_text(), str(p)), m, p.name == "__init__.py", known)
            for m, p in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
    return sorted(found)


def test_no_import_cycle_in_annt():
    found = cycles(module_graph())
    assert not found, "import cycles (each line: modules that import each other):\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_the_check_finds_a_cycle_through_a_lazy_import(tmp_path):
    pkg = tmp_path / "annt"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from annt.sub.b import thing\n")
    (pkg / "sub" / "a.py").write_text("def f():\n    from .b import thing\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    from annt.sub import a\nthing = 1\n")
    (pkg / "c.py").write_text("from annt import sub\n")
    graph = module_graph(pkg)
    assert graph["annt.sub.a"] == {"annt.sub.b"} and graph["annt.sub.b"] == {"annt.sub.a"}
    assert graph["annt.c"] == {"annt.sub"} and graph["annt.sub"] == {"annt.sub.b"}
    assert cycles(graph) == [["annt.sub.a", "annt.sub.b"]]
