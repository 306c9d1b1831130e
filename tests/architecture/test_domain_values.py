"""The core's services answer domain values (``aiki.platform.domain``), never the wire's types:
the API maps them (``aiki.api.wire``). Services may take the protocol's request Structs (the
command protocol), so an import contract cannot say this; the return annotations can."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import aiki.platform.services
from aiki.platform.domain import values

PROTOCOL = "aiki.worker_sdk.protocol"


def _modules() -> Iterator[ModuleType]:
    package = aiki.platform.services
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        yield importlib.import_module(info.name)


def _functions(module: ModuleType) -> Iterator[tuple[str, Callable[..., Any]]]:
    """The functions and methods defined in ``module`` (not those it imports)."""
    for name, obj in vars(module).items():
        if inspect.isfunction(obj) and obj.__module__ == module.__name__:
            yield name, obj
        elif inspect.isclass(obj) and obj.__module__ == module.__name__:
            for attr, member in vars(obj).items():
                if inspect.isfunction(member):
                    yield f"{name}.{attr}", member


def _types(hint: Any) -> Iterator[Any]:
    """``hint`` and every type inside it (unions, generics, aliases)."""
    yield hint
    origin = typing.get_origin(hint)
    if origin is not None:
        yield origin
    for arg in typing.get_args(hint):
        yield from _types(arg)


def _returns(fn: Callable[..., Any], module: ModuleType) -> Any:
    return typing.get_type_hints(fn, vars(module))["return"] if "return" in fn.__annotations__ else None


def test_services_are_found() -> None:
    names = {m.__name__ for m in _modules()}
    assert {"aiki.platform.services.runs", "aiki.platform.services.commands.endings"} <= names


def test_no_service_function_returns_a_wire_type() -> None:
    offenders = []
    for module in _modules():
        for name, fn in _functions(module):
            returned = _returns(fn, module)
            wire = [t for t in _types(returned) if getattr(t, "__module__", "").startswith(PROTOCOL)]
            if wire:
                offenders.append(f"{module.__name__}.{name} -> {wire}")
    assert offenders == []


def test_the_check_sees_a_wire_return() -> None:
    """The check above is not vacuous: it catches a protocol type inside an annotation."""
    from aiki.worker_sdk import protocol as p

    def answers_wire() -> list[p.RunView] | None: ...

    found = [
        t
        for t in _types(typing.get_type_hints(answers_wire, localns={"p": p})["return"])
        if t.__module__.startswith(PROTOCOL)
    ]
    assert found == [p.RunView]
    assert not any(getattr(t, "__module__", "").startswith(PROTOCOL) for t in _types(values.Run))
