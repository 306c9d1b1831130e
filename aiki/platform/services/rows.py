"""Rows to domain values: the one place that knows how a stored run reads as a
:mod:`~aiki.platform.domain.values` value (payloads stay the stored JSON text)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from aiki.platform.domain import values as v
from aiki.worker_sdk import protocol as p

_failure_decoder = msgspec.json.Decoder(v.Failure)


def failure(text: str | None) -> v.Failure | None:
    return None if text is None else _failure_decoder.decode(text)


def encode_error(error: p.ErrorInfo | None) -> str | None:
    """A failure as stored: the wire's JSON (fields at their default are left out)."""
    return None if error is None else msgspec.json.encode(error).decode()


def run(row: Mapping[Any, Any]) -> v.Run:
    return v.Run(
        id=row["id"],
        workflow=row["workflow_name"],
        version=row["version"],
        status=row["status"],
        revision=row["revision"],
        attempt=row["attempt"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        input=row["input"],
        output=row["output"],
        error=failure(row["error"]),
        reference_id=row["reference_id"],
        parent_run_id=row["parent_run_id"],
        pool=row["pool"],
        recoveries=row["recoveries"],
        wake_at=row["wake_at"],
        finished_at=row["finished_at"],
    )


def history_entry(row: Mapping[Any, Any]) -> v.HistoryEntry:
    return v.HistoryEntry(
        id=row["id"],
        attempt=row["attempt"],
        from_status=row["from_status"],
        to_status=row["to_status"],
        created_at=row["created_at"],
        reason=row["reason"],
    )


def event_entry(row: Mapping[Any, Any]) -> v.EventEntry:
    return v.EventEntry(
        id=row["id"], name=row["name"], seq=row["seq"], data=row["data"], reference_id=row["reference_id"]
    )


def task_entry(row: Mapping[Any, Any]) -> v.TaskEntry:
    return v.TaskEntry(
        address=row["address"],
        seq=row["seq"],
        name=row["name"],
        status=row["status"],
        attempts=row["attempts"],
        output=row["output"],
        error=failure(row["error"]),
        next_attempt_at=row["next_attempt_at"],
    )


def child_entry(row: Mapping[Any, Any]) -> v.ChildEntry:
    return v.ChildEntry(
        address=row["parent_address"],
        seq=row["parent_seq"],
        run_id=row["id"],
        workflow=row["workflow_name"],
        version=row["version"],
        status=row["status"],
        output=row["output"],
        error=failure(row["error"]),
    )


def activation(r: Any, s: dict[str, list[Any]], lease_ttl_ms: int) -> v.Activation:
    """What the executor of a claimed run needs: the run as claimed (``r``) and its state ``s``."""
    return v.Activation(
        run_id=r["id"],
        revision=r["revision"],
        workflow=r["workflow_name"],
        version=r["version"],
        attempt=r["attempt"],
        input=r["input"],
        lease_ttl_ms=lease_ttl_ms,
        tasks=[task_entry(t) for t in s["tasks"]],
        events=[event_entry(e) for e in s["events"]],
        sleeps=[v.SleepEntry(x["name"], x["seq"], x["status"], x["wake_at"]) for x in s["sleeps"]],
        wait_timeouts=[v.WaitTimeoutEntry(w["name"], w["seq"]) for w in s["wait_timeouts"]],
        retry=r["retry"],
        reference_id=r["reference_id"],
        children=[child_entry(c) for c in s["children"]],
        deadline_at=r["deadline_at"],
        resumed_wait=v.WaitRef(r["wait_event"], r["wait_seq"] or 0) if r.get("wait_event") else None,
    )
