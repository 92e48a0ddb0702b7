"""Layers point one way and each concept has one owner (issue 15, items 2 and 6), read from the
source with `ast`: imports inside functions count too, since they tie packages together all the same."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# import name -> folder (pyproject's package-dir); the core is facecorpus/ itself
PACKAGES = {"facecorpus.converters": "converters", "facecorpus.shards": "shards", "facecorpus.trainer": "trainer",
            "facecorpus.reports": "reports", "facecorpus": "facecorpus"}


def _package_of(module: str) -> str | None:
    """The package a dotted module name (or `facecorpus.X` name) belongs to."""
    for name in PACKAGES:   # most specific first: the core comes last
        if module == name or module.startswith(name + "."):
            return name
    return None


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {f"{node.module}.{a.name}" for a in node.names}   # `from facecorpus import shards`
    return names


def _sources():
    for name, folder in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield name, path


def test_no_package_imports_one_that_imports_it_back():
    edges: dict[tuple[str, str], Path] = {}
    for name, path in _sources():
        for imported in _imports(path):
            other = _package_of(imported)
            if other and other != name:
                edges.setdefault((name, other), path)
    cycles = [(a, b, edges[a, b], edges[b, a]) for (a, b) in edges if (b, a) in edges and a < b]
    assert not cycles, cycles


def test_only_the_shard_format_opens_tars():
    openers = {path.relative_to(ROOT).as_posix() for _, path in _sources()
               if {"tarfile", "webdataset"} & {i.split(".")[0] for i in _imports(path)}}
    assert openers == {"shards/format.py"}


def test_kinds_are_defined_once():
    owners = [path.relative_to(ROOT).as_posix() for _, path in _sources()
              if any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "KINDS" for t in n.targets)
                     for n in ast.walk(ast.parse(path.read_text())))]
    assert owners == ["facecorpus/records.py"]
