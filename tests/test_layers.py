"""Layers point one way and each concept has one owner (issue 15, items 2 and 6), read from the
source with `ast`: imports inside functions count too, since they tie packages together all the same."""

from __future__ import annotations

import ast
import sys
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


def test_one_owner_opens_each_kind_of_tar():
    """Our shard tars are read and written only by shards/format.py, with its checks. Raw input tars
    (img2dataset's downloads) are another thing: read, never written or extracted, only by
    facecorpus/rawtar.py (members and their byte ranges). No other module imports tarfile or webdataset."""
    openers = {path.relative_to(ROOT).as_posix() for _, path in _sources()
               if {"tarfile", "webdataset"} & {i.split(".")[0] for i in _imports(path)}}
    assert openers == {"shards/format.py", "facecorpus/rawtar.py"}


def test_kinds_are_defined_once():
    owners = [path.relative_to(ROOT).as_posix() for _, path in _sources()
              if any(isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "KINDS" for t in n.targets)
                     for n in ast.walk(ast.parse(path.read_text())))]
    assert owners == ["facecorpus/records.py"]


def _private_reaches(path: Path) -> list[str]:
    """`from facecorpus... import _name` and `module._name` on a module imported from facecorpus."""
    tree = ast.parse(path.read_text(), str(path))
    modules, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("facecorpus"):
            for a in node.names:
                if a.name.startswith("_"):
                    found.append(f"{path.name}: from {node.module} import {a.name}")
                modules[a.asname or a.name] = node.module
        elif isinstance(node, ast.Import):
            modules.update({a.asname or a.name.split(".")[0]: a.name for a in node.names if a.name.startswith("facecorpus")})
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{path.name}: {node.value.id}.{node.attr}")
    return found


def test_no_module_reaches_into_another_modules_private_names():
    found = [f for _, path in _sources() for f in _private_reaches(path)]
    assert not found, found  # main: sample.py imported pipeline._read_one, ledger.py cache._parts


def test_no_benchmark_is_named_like_a_standard_library_module():
    # `python benchmarks/x.py` puts benchmarks/ first on sys.path: benchmarks/tokenize.py shadowed the
    # stdlib's tokenize (imported by logging, inspect and torch) and needed a sys.path rewrite.
    names = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}
    assert not names & sys.stdlib_module_names, names & sys.stdlib_module_names


def test_tests_share_helpers_through_helper_modules_not_through_each_other():
    # A test module imported by another runs its fixtures and module-level code twice and ties two
    # tests' edits together; shared pieces live in the *kit.py / runs.py helpers beside the tests.
    found = [f"{path.name} imports {name}" for path in sorted((ROOT / "tests").glob("*.py"))
             for name in _imports(path) if name.split(".")[0].startswith("test_")]
    assert not found, found  # main: test_gpu imported test_attention and test_encoder, and two more
