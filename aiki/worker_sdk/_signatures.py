"""What a handler's signature says: its positional parameters and resolved annotations."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any


def handler_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations of ``fn``, or none when they cannot be resolved."""
    try:
        return typing.get_type_hints(fn)
    except (NameError, TypeError):
        # Unresolvable annotations degrade to untyped payloads rather than failing at import.
        return {}


def positional_params(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    """The parameters of ``fn`` that a positional argument can fill."""
    return [
        p for p in inspect.signature(fn).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
