"""Rows to wire types for the read side that still answers in them (``queries``, ``schedules``);
the other services answer domain values (``rows.py``), mapped to the wire by ``aiki.api.wire``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from aiki.worker_sdk import protocol as p

_error_decoder = msgspec.json.Decoder(p.ErrorInfo)


_NULL = msgspec.Raw(b"null")


def raw(text: str | None) -> msgspec.Raw:
    return _NULL if text is None else msgspec.Raw(text.encode())


def error_info(text: str | None) -> p.ErrorInfo | None:
    return None if text is None else _error_decoder.decode(text)


def run_view(row: Mapping[Any, Any]) -> p.RunView:
    return p.RunView(
        id=row["id"],
        workflow=row["workflow_name"],
        version=row["version"],
        status=row["status"],
        revision=row["revision"],
        attempt=row["attempt"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        input=msgspec.Raw(row["input"].encode()),
        output=raw(row["output"]),
        error=error_info(row["error"]),
        reference_id=row["reference_id"],
        parent_run_id=row["parent_run_id"],
        pool=row["pool"],
        recoveries=row["recoveries"],
        wake_at=row["wake_at"],
        finished_at=row["finished_at"],
    )


def history_entry(row: Mapping[Any, Any]) -> p.HistoryEntry:
    return p.HistoryEntry(
        id=row["id"],
        attempt=row["attempt"],
        from_status=row["from_status"],
        to_status=row["to_status"],
        created_at=row["created_at"],
        reason=row["reason"],
    )
