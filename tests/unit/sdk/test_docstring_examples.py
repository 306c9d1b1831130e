"""The examples in the public SDK's docstrings run, as doctests, without a server.

An example that needs a server is written as a plain code block (``Example::`` or
``.. code-block:: python``), not as ``>>>`` lines, so every ``>>>`` line here is checked.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

# The public SDK: the modules that hold public names, and the façades.
PUBLIC_MODULES = [
    "aiki",
    "aiki.worker_sdk",
    "aiki.worker_sdk.client",
    "aiki.worker_sdk.definitions",
    "aiki.worker_sdk.endpoint",
    "aiki.worker_sdk.retry",
    "aiki.worker_sdk.run",
    "aiki.worker_sdk.schedules",
    "aiki.worker_sdk.serde",
    "aiki.worker_sdk.tasks",
    "aiki.worker_sdk.worker",
]

# Modules whose docstrings must carry at least one runnable example.
WITH_EXAMPLES = {
    "aiki",
    "aiki.worker_sdk.client",
    "aiki.worker_sdk.definitions",
    "aiki.worker_sdk.endpoint",
    "aiki.worker_sdk.retry",
    "aiki.worker_sdk.run",
    "aiki.worker_sdk.schedules",
    "aiki.worker_sdk.serde",
    "aiki.worker_sdk.tasks",
    "aiki.worker_sdk.worker",
}


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, report=True, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (see the captured output)"
    if name in WITH_EXAMPLES:
        assert result.attempted > 0, f"{name} has no runnable docstring example"
