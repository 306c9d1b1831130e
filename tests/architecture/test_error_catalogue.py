"""One catalogue of error codes (``aiki.worker_sdk.error_codes``): the core, the HTTP layer and the SDK agree.

Every code the core raises has an HTTP status and arrives in the SDK as a class of its own meaning
(never as ``UnexpectedResponseError``); every SDK class's code is produced by something: the core,
the HTTP layer, or the SDK itself.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import aiki.iam
import aiki.platform
from aiki.api.errors import STATUS_BY_CODE
from aiki.platform.domain.errors import OIDC_ERROR_CODES, CoreError
from aiki.worker_sdk import error_codes as codes
from aiki.worker_sdk.errors import PROBLEM_CODES, AikiError, TaskConflictError, UnexpectedResponseError
from aiki.worker_sdk.protocol import Problem
from aiki.worker_sdk.transport import error_from_problem

PACKAGE = Path(__file__).resolve().parents[2] / "aiki"

# Base classes: nothing is raised with their own code (an OIDC refusal carries one of OIDC_CODES).
_BASE_CODES = {codes.ERROR, codes.OIDC_ERROR}


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _core_codes() -> set[str]:
    for package in (aiki.platform, aiki.iam):  # every core error class, wherever it is defined
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)
    own = {cls.code for cls in _subclasses(CoreError)} - _BASE_CODES
    return own | set(OIDC_ERROR_CODES)


CORE_CODES = sorted(_core_codes())
SDK_CLASSES = sorted([AikiError, *_subclasses(AikiError)], key=lambda cls: cls.__name__)
SDK_CLASS_BY_CODE = {cls.code: cls for cls in SDK_CLASSES}


def _catalogue_constants() -> dict[str, str]:
    """Constant name → code, for every code the catalogue defines."""
    return {name: value for name, value in vars(codes).items() if name.isupper() and isinstance(value, str)}


def _codes_referenced_in(folder: Path) -> set[str]:
    """The catalogue's codes that the modules under ``folder`` name (as ``codes.NAME``)."""
    constants = _catalogue_constants()
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            named = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "codes"
            if named and node.attr in constants:
                found.add(constants[node.attr])
    return found


def _classes_constructed_in(folder: Path, skip: Path) -> set[str]:
    """Names of everything called (or raised) in the modules under ``folder``, but ``skip``."""
    called = set()
    for path in folder.rglob("*.py"):
        if path == skip:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                called.add(node.func.id)
            elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Name):
                called.add(node.exc.id)
    return called


def _problem(code: str) -> Problem:
    status = STATUS_BY_CODE[code]
    return Problem(type="about:blank", title="t", status=status, code=code, detail="d", instance="/i")


@pytest.mark.parametrize("code", CORE_CODES)
def test_every_core_code_has_an_http_status(code: str) -> None:
    assert code in STATUS_BY_CODE, f"{code!r} has no HTTP status in the catalogue"


@pytest.mark.parametrize("code", CORE_CODES)
def test_every_core_code_arrives_in_the_sdk_as_a_class_of_its_own(code: str) -> None:
    error = error_from_problem(STATUS_BY_CODE[code], _problem(code), retry_after="1")
    assert not isinstance(error, UnexpectedResponseError), f"{code!r} arrives as UnexpectedResponseError"
    expected = SDK_CLASS_BY_CODE.get(code) or PROBLEM_CODES.get(code)
    assert expected is not None, f"{code!r} has no SDK class"
    assert type(error) is expected


def test_task_conflict_arrives_as_task_conflict_error() -> None:
    error = error_from_problem(409, _problem(codes.TASK_CONFLICT))
    assert isinstance(error, TaskConflictError)
    assert error.code == "task_conflict"


@pytest.mark.parametrize("cls", SDK_CLASSES, ids=lambda cls: cls.__name__)
def test_every_sdk_class_code_is_produced_by_something(cls: type[AikiError]) -> None:
    if cls.code in CORE_CODES:
        return
    if cls.code in STATUS_BY_CODE:  # the HTTP layer answers it on its own
        assert cls.code in _codes_referenced_in(PACKAGE / "api"), f"nothing in aiki.api answers {cls.code!r}"
        return
    assert cls.code in codes.SDK_CODES, f"{cls.__name__}.code {cls.code!r} is in no part of the catalogue"
    if cls is not AikiError:
        sdk = PACKAGE / "worker_sdk"
        assert cls.__name__ in _classes_constructed_in(sdk, skip=sdk / "errors.py"), f"the SDK never raises {cls}"


def test_every_http_status_belongs_to_a_code_that_is_produced() -> None:
    answered_by_api = _codes_referenced_in(PACKAGE / "api")
    orphans = set(STATUS_BY_CODE) - set(CORE_CODES) - answered_by_api
    assert not orphans, f"statuses for codes nothing produces: {sorted(orphans)}"
    assert not set(STATUS_BY_CODE) & codes.SDK_CODES


def test_every_sdk_problem_code_is_answered_by_the_server_or_raised_by_the_sdk() -> None:
    for code, cls in PROBLEM_CODES.items():
        assert code in STATUS_BY_CODE or code in codes.SDK_CODES, code
        assert issubclass(cls, AikiError)


def test_codes_are_defined_once_in_the_catalogue() -> None:
    """No error class spells its code as a literal: each names the catalogue's constant."""
    defined = set(_catalogue_constants().values()) | codes.OIDC_CODES
    for path in (PACKAGE / "platform" / "domain" / "errors.py", PACKAGE / "worker_sdk" / "errors.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    target = stmt.target if isinstance(stmt, ast.AnnAssign) else None
                    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                        target = stmt.targets[0]
                    value = getattr(stmt, "value", None)
                    if isinstance(target, ast.Name) and target.id == "code":
                        assert not isinstance(value, ast.Constant), f"{path.name}: {node.name}.code is a literal"
    assert {cls.code for cls in SDK_CLASSES} <= defined
    assert set(CORE_CODES) <= defined
