"""Building an execution's commands: what its writes say about errors and child runs."""

from __future__ import annotations

import traceback
from typing import Any

import msgspec

from aiki.worker_sdk.definitions import WorkflowVersion
from aiki.worker_sdk.errors import AikiError
from aiki.worker_sdk.protocol import ErrorInfo, StartChild

_TRACEBACK_LIMIT = 8000


def error_info(error: BaseException, *, cause: str | None = None) -> ErrorInfo:
    """Describe ``error`` as the server records it."""
    text = "".join(traceback.format_exception(error))
    return ErrorInfo(
        type=type(error).__name__,
        message=str(error) or type(error).__name__,
        code=getattr(error, "code", None) if isinstance(error, AikiError) else None,
        traceback=text[-_TRACEBACK_LIMIT:],
        cause=cause,
    )


def start_child(run_id: str, address: str, seq: int, version: WorkflowVersion[Any, Any], raw: bytes) -> StartChild:
    """Start a child of ``version`` with input ``raw`` (JSON) as entry ``seq`` at ``address``, with its options.

    The revision is the one the writer holds when it sends the command.
    """
    options = version._options
    return StartChild(
        run_id=run_id,
        revision=0,
        address=address,
        seq=seq,
        workflow=version.name,
        version=version.version,
        input=msgspec.Raw(raw),
        retry=None if options.retry is None else options.retry.to_wire(),
        reference_id=options.reference_id,
        conflict=options.conflict,
        delay_ms=options.delay_ms,
        pool=options.pool,
        require_registered=options.require_registered,
    )
