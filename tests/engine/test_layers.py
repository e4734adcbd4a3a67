"""The packages of ``annt`` form layers: a package imports only packages of lower layers.

Every import is checked, module-level and inside functions (a lazy import is still a
dependency): for example the experiments layer never imports the CLI, the report never
imports the experiments layer, the store never imports the metrics.
"""

from __future__ import annotations

import ast
from pathlib import Path

import annt

SRC = Path(annt.__file__).parent

LAYERS: list[set[str]] = [  # lowest first
    {"errors", "version", "progress"},
    {"device", "inputs", "provenance"},
    {"quant"},
    {"models"},
    {"store"},
    {"deploy"},  # ONNX export and exported models' sidecars; zoo's loader checks them
    {"data", "zoo"},
    {"metrics", "attacks"},
    {"train"},  # adversarial training crafts its examples with the attacks' steps
    {"robustness"},
    {"report"},  # renders studies' and diagnoses' results (reads robustness.defaults' column order)
    {"experiments"},
    {"cli"},
    {"__init__", "__main__"},  # the package's own ``annt.run_study`` etc., ``python -m annt``
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _package(path: Path) -> str:
    first = path.relative_to(SRC).parts[0]
    return first.removesuffix(".py")


def _imported(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """``(line, annt package)`` of every import of an ``annt`` module in a file."""
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")[: -node.level]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
            if names[0] == "annt":  # ``from annt import x``: x is a package or module of annt
                names = [f"annt.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "annt" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def test_every_package_has_a_layer():
    packages = {_package(p) for p in SRC.rglob("*.py")}
    assert packages <= set(RANK), f"place {sorted(packages - set(RANK))} in LAYERS"


def test_no_import_goes_up_or_sideways():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        mine = _package(path)
        module = ".".join(("annt", *path.relative_to(SRC).with_suffix("").parts))
        for line, other in _imported(ast.parse(path.read_text(), str(path)), module):
            if other != mine and RANK.get(other, -1) >= RANK[mine]:
                bad.append(f"{path.relative_to(SRC.parent)}:{line}: {mine} imports {other}")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_the_check_sees_lazy_and_relative_imports():
    tree = ast.parse("def f():\n    from annt.cli import main\nfrom ..report import tables\nimport annt.store.lock\n"
                     "from annt import metrics\n")
    assert sorted(p for _, p in _imported(tree, "annt.experiments.runner")) == ["cli", "metrics", "report", "store"]
