"""The runtime packages import only the runtime dependencies pyproject declares, and declare nothing they do not use.

Every module of collectors/, gateway/, rules/, core/ and nakhon/ (the simulator included: the demo runs it) is
parsed; every absolute import outside `if TYPE_CHECKING:` that is not the standard library or the project itself
must come from a distribution in `[project] dependencies`. Extras (`bench`, `test`) are for bench/ and tests/ only.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_PACKAGES = ("collectors", "gateway", "rules", "core", "nakhon")
PROJECT_PACKAGES = {*RUNTIME_PACKAGES, "bench", "tests", "dashboards"}
# Declared but never imported: loaded by another library by name.
LOADED_BY_NAME = {"psycopg": "SQLAlchemy's postgresql+psycopg driver (gateway registry on PostgreSQL)"}


def _dist_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """(top-level module, line) of every absolute import, skipping `if TYPE_CHECKING:` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno
        stack.extend(ast.iter_child_nodes(node))


def runtime_imports(root: Path = ROOT) -> dict[str, list[str]]:
    """Third-party (and project-external) top-level modules the runtime packages import → where."""
    out: dict[str, list[str]] = {}
    for package in RUNTIME_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for module, line in _imports(tree):
                if module in sys.stdlib_module_names or module in RUNTIME_PACKAGES or module == "__future__":
                    continue
                out.setdefault(module, []).append(f"{path.relative_to(root)}:{line}")
    return out


def undeclared(imports: dict[str, list[str]], declared: set[str]) -> dict[str, list[str]]:
    """The imports no declared runtime distribution provides (or that reach above the runtime: bench, tests)."""
    provided = packages_distributions()
    bad: dict[str, list[str]] = {}
    for module, where in imports.items():
        dists = {_dist_name(d) for d in provided.get(module, [])}
        if module in PROJECT_PACKAGES or not dists & declared:
            bad[module] = where
    return bad


def test_runtime_packages_import_only_the_runtime_dependencies() -> None:
    declared = {_dist_name(r) for r in _pyproject()["project"]["dependencies"]}
    bad = undeclared(runtime_imports(), declared)
    assert not bad, "imported by the runtime but not in [project] dependencies (or above the runtime): " + "; ".join(
        f"{module} at {', '.join(where[:3])}" for module, where in sorted(bad.items())
    )


def test_every_runtime_dependency_is_imported_by_the_runtime() -> None:
    provided = packages_distributions()
    used = {_dist_name(d) for module in runtime_imports() for d in provided.get(module, [])}
    declared = {_dist_name(r) for r in _pyproject()["project"]["dependencies"]}
    unused = declared - used - set(LOADED_BY_NAME)
    assert not unused, f"runtime dependencies the runtime never imports (move them to an extra): {sorted(unused)}"


def test_the_check_catches_an_undeclared_import(tmp_path: Path) -> None:
    """The attack: psutil (installed here, declared only in the bench extra) imported by a collector module."""
    for package in RUNTIME_PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "collectors" / "sampler.py").write_text(
        "from typing import TYPE_CHECKING\nimport orjson\nif TYPE_CHECKING:\n    import httpx\n"
        "def rss():\n    import psutil\n    return psutil.Process().memory_info().rss\n",
        encoding="utf-8",
    )
    (tmp_path / "nakhon" / "cli.py").write_text("from bench.cli import register\n", encoding="utf-8")
    declared = {_dist_name(r) for r in _pyproject()["project"]["dependencies"]}
    bad = undeclared(runtime_imports(tmp_path), declared)
    assert set(bad) == {"psutil", "bench"}
    assert bad["psutil"] == ["collectors/sampler.py:6"]


def test_extras_hold_what_the_benchmarks_and_the_tests_need() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    assert "psutil" in {_dist_name(r) for r in extras["bench"]}
    assert "pytest" in {_dist_name(r) for r in extras["test"]}
