"""The shape of the code: tenancy in the schema, a pinned façade, and who may import what."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from aiki.iam.tables import IAM_GLOBAL_TABLES, IAM_TENANT_TABLES, metadata
from aiki.platform.db.tables import TENANT_TABLES as CORE_TENANT_TABLES

TENANT_TABLES = CORE_TENANT_TABLES + IAM_TENANT_TABLES

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "aiki"

# The public façade. Adding a name is a public API change: update this list on purpose.
EXPECTED_PUBLIC_NAMES = [
    "ActionNotAllowedError",
    "AikiError",
    "AikiServer",
    "AlreadyExistsError",
    "AuthenticationError",
    "ChildHandle",
    "ChildResult",
    "Client",
    "ConflictError",
    "Database",
    "EmailUnverifiedError",
    "Endpoint",
    "EventDefinition",
    "EventResult",
    "EventSender",
    "EventWaiter",
    "InvalidTransitionError",
    "MalformedRequestError",
    "NonDeterminismError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitedError",
    "ReferenceConflictError",
    "RetryPolicy",
    "Run",
    "RunCancelledError",
    "RunFailedError",
    "RunHandle",
    "RunNotFoundError",
    "Schedule",
    "ScheduleHandle",
    "ScheduleNotFoundError",
    "ServerUnavailableError",
    "SleepResult",
    "StaleRevisionError",
    "StartOptions",
    "Task",
    "TaskConflictError",
    "TaskFailedError",
    "UnexpectedResponseError",
    "UnexpectedStatusError",
    "ValidationError",
    "WaitTimeoutError",
    "Worker",
    "WorkerHandle",
    "Workflow",
    "WorkflowNotFoundError",
    "WorkflowVersion",
    "client",
    "database",
    "endpoint",
    "event",
    "json_schema",
    "schedule",
    "server",
    "task",
    "worker",
    "workflow",
]

# -- tenancy -------------------------------------------------------------------------------------

GLOBAL_TABLES = {"organizations", "namespaces"} | {t.name for t in IAM_GLOBAL_TABLES}


@pytest.mark.parametrize("table", TENANT_TABLES, ids=lambda t: t.name)
def test_tenant_tables_carry_a_non_null_namespace_id(table: sa.Table) -> None:
    assert "namespace_id" in table.c, f"{table.name} has no namespace_id"
    assert table.c.namespace_id.nullable is False, f"{table.name}.namespace_id is nullable"


def test_every_table_but_the_tenancy_roots_is_tenant_scoped() -> None:
    tenant = {t.name for t in TENANT_TABLES}
    assert len(tenant) == len(TENANT_TABLES), "a table is listed twice in TENANT_TABLES"
    assert all(t.metadata is metadata for t in TENANT_TABLES)
    unscoped = set(metadata.tables) - GLOBAL_TABLES - tenant
    assert not unscoped, f"tables missing from TENANT_TABLES: {sorted(unscoped)}"
    assert set(metadata.tables) >= GLOBAL_TABLES
    assert not GLOBAL_TABLES & tenant


# -- the public façade ---------------------------------------------------------------------------


def test_public_facade_is_sorted_and_pinned() -> None:
    import aiki

    assert aiki.__all__ == sorted(aiki.__all__)
    assert len(set(aiki.__all__)) == len(aiki.__all__)
    assert aiki.__all__ == EXPECTED_PUBLIC_NAMES


def test_every_public_name_resolves() -> None:
    import aiki

    missing = [name for name in aiki.__all__ if not hasattr(aiki, name)]
    assert not missing


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def test_importing_aiki_loads_no_server_dependency() -> None:
    """A worker host installs only the SDK: `import aiki` must not reach the server stack."""
    code = "import json, sys\nimport aiki\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=_subprocess_env(),
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    forbidden = ("litestar", "sqlalchemy", "alembic", "aiki.api", "aiki.platform")
    offenders = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert not offenders, f"`import aiki` loaded {offenders}"
    assert "aiki.worker_sdk" in loaded


# -- imports, read with ast ----------------------------------------------------------------------


def _python_files(*parts: str) -> list[Path]:
    base = PACKAGE.joinpath(*parts)
    files = sorted(base.rglob("*.py"))
    assert files, f"no Python files under {base}"
    return files


def _imports(source: str) -> Iterator[tuple[str, list[str], int]]:
    """Every absolute import in ``source``: (module, imported names, line)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, [alias.name for alias in node.names], node.lineno


def _is_in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _litestar_imports(source: str) -> list[str]:
    return [f"line {line}: {mod}" for mod, _, line in _imports(source) if _is_in(mod, "litestar")]


def _sqlalchemy_imports(source: str) -> list[str]:
    offending = []
    for module, names, line in _imports(source):
        if not _is_in(module, "sqlalchemy") or _is_in(module, "sqlalchemy.exc"):
            continue
        if module == "sqlalchemy" and names and all(name == "exc" for name in names):
            continue  # `from sqlalchemy import exc` is the exception module too
        offending.append(f"line {line}: {module} {names}".rstrip(" []"))
    return offending


def test_the_import_checks_catch_what_they_should() -> None:
    """The checks below pass vacuously if the walker is broken; prove it sees imports."""
    assert _litestar_imports("import litestar\n")
    assert _litestar_imports("from litestar.exceptions import HTTPException\n")
    assert _litestar_imports("def f():\n    from litestar import Request\n")
    assert not _litestar_imports("import litestarish\nfrom . import litestar\n")
    assert _sqlalchemy_imports("import sqlalchemy as sa\n")
    assert _sqlalchemy_imports("from sqlalchemy import select\n")
    assert _sqlalchemy_imports("from sqlalchemy.ext.asyncio import AsyncConnection\n")
    assert _sqlalchemy_imports("if TYPE_CHECKING:\n    from sqlalchemy import Connection\n")
    assert not _sqlalchemy_imports("from sqlalchemy.exc import IntegrityError\nimport sqlalchemy.exc\n")
    assert not _sqlalchemy_imports("from sqlalchemy import exc\n")


@pytest.mark.parametrize("component", ["platform", "worker_sdk"])
def test_core_and_sdk_never_import_litestar(component: str) -> None:
    offenders = {}
    for path in _python_files(component):
        found = _litestar_imports(path.read_text(encoding="utf-8"))
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert not offenders, f"litestar imported outside the web layer: {offenders}"


@pytest.mark.parametrize("component", [("platform", "services"), ("api",)], ids=["services", "api"])
def test_sql_stays_in_repositories(component: tuple[str, ...]) -> None:
    """Services and controllers reach the database through repositories; only DB errors leak out."""
    offenders = {}
    for path in _python_files(*component):
        found = _sqlalchemy_imports(path.read_text(encoding="utf-8"))
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert not offenders, f"sqlalchemy imported outside aiki/platform/db: {offenders}"
