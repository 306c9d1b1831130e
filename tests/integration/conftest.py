"""The core integration tests run on {SQLite, PostgreSQL} x {local port, HTTP}: ids like ``[postgres-http]``."""

from __future__ import annotations

import pytest

from tests.conftest import TRANSPORTS


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """``port``: the SDK client calls the server in-process. ``http``: it talks to the same server
    served on a loopback socket, through ``client(url=...)`` (workers write in batches)."""
    param: str = request.param
    return param
