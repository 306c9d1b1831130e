"""The SDK's shape: a façade of public names over modules, no import circle, and no engine in it.

import-linter holds the same rules for the import graph (pyproject.toml); these tests read the
modules with ``ast`` so that a failure names the line to fix.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import aiki.worker_sdk as sdk

SDK = Path(sdk.__file__).resolve().parent
PACKAGE = "aiki.worker_sdk"

# The engine: what executes runs and carries the worker protocol. Users never name these. Private
# modules (``_execution``, ``_run_writer``, ...) are engine by their name; ``transport`` is the
# local-port contract the server implements, public-named because the server imports it.
ENGINE_MODULES = {"transport"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SDK).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(path: Path) -> set[str]:
    """The SDK modules a module imports when it is loaded (not under TYPE_CHECKING, not in a function)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    body = [n for n in tree.body if not (isinstance(n, ast.If) and _is_type_checking(n.test))]
    for node in body:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:
                found |= {f"{PACKAGE}.{alias.name}" for alias in node.names}
            elif node.module.startswith(PACKAGE + "."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(PACKAGE + ".")}
    return found


def _sdk_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SDK.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _runtime_imports(path):
            # ``from aiki.worker_sdk import serde`` names a module; ``from x import Name`` a module's attribute.
            while imported not in modules and "." in imported:
                imported = imported.rsplit(".", 1)[0]
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in visiting:
            return [*visiting[visiting.index(module) :], module]
        if module in done:
            return None
        visiting.append(module)
        for target in sorted(graph[module]):
            if (found := visit(target)) is not None:
                return found
        visiting.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        if (found := visit(module)) is not None:
            return found
    return None


def _is_public(module: str) -> bool:
    short = module.removeprefix(PACKAGE + ".")
    return not any(part.startswith("_") for part in short.split(".")) and short.split(".")[0] not in ENGINE_MODULES


def test_the_sdk_has_no_import_circle() -> None:
    cycle = _cycle(_sdk_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_facade_imports_public_modules_only() -> None:
    imported = _runtime_imports(SDK / "__init__.py")
    assert imported, "the façade imports nothing?"
    private = sorted(m for m in imported if not _is_public(m))
    assert not private, f"aiki.worker_sdk imports private or engine modules: {private}"


def test_every_public_name_lives_in_a_public_module() -> None:
    for name in sdk.__all__:
        value = getattr(sdk, name)
        home = getattr(value, "__module__", None) or inspect.getmodule(value).__name__  # type: ignore[union-attr]
        assert home.startswith(PACKAGE + "."), f"{name} is defined in {home}"
        assert _is_public(home), f"{name} is defined in the private module {home}"


def test_the_engine_is_not_public() -> None:
    assert not hasattr(sdk, "Execution")
    assert not hasattr(sdk, "ReplayState")
    assert not any(n.startswith("_") for n in sdk.__all__)


def test_the_user_facing_modules_import_no_engine_even_for_types() -> None:
    """``Run`` and the definitions reach the engine only through the ``_runtime`` protocol."""
    for module in ("definitions", "tasks", "run", "_runtime", "_replay_state", "_signatures"):
        path = SDK / f"{module}.py"
        tree = ast.parse(path.read_text())
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        engine = sorted(n for n in names if n.removeprefix(PACKAGE + ".") in {"_execution", "worker"})
        assert not engine, f"{module} imports {engine}"
    importlib.import_module(f"{PACKAGE}.run")
