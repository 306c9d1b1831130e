"""Rows as plain mappings: what every IAM repository returns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

Row = Mapping[str, Any]


def one(result: sa.CursorResult[Any]) -> Row | None:
    """The first row of ``result`` as a dict, or None."""
    row = result.mappings().first()
    return dict(row) if row is not None else None


def all_rows(result: sa.CursorResult[Any]) -> list[Row]:
    """Every row of ``result``, as dicts."""
    return [dict(r) for r in result.mappings().all()]
