"""Apply a list of executor commands: per run in order, runs independently (see ``protocol.commands``).

Each command is answered by its kind's response or by the exception it was refused with; the API
turns an exception into the problem its route would answer. Once a run's command is refused, that
run's later commands in the list get the same exception and are not applied.

A :class:`~aiki.worker_sdk.protocol.RecordTask` directly followed by an ending of the same run at
the same revision (``Complete``, ``Fail``, ``AwaitTaskRetry``) is applied together with it: one
statement on PostgreSQL (:func:`endings.record_and_end`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from aiki.platform.domain import values as v
from aiki.platform.domain.errors import CoreError
from aiki.platform.services import children
from aiki.platform.services.commands import endings, record, sleeps, waits, yields
from aiki.platform.services.context import Services
from aiki.worker_sdk import protocol as p

Answer = v.TaskRecorded | v.Transitioned | v.ChildStarted
"""What an applied command answers (by kind: a record, a transition, a child start)."""
Outcome = Answer | Exception
"""A command's answer, or the exception it was refused with."""

Handler = Callable[[Services, str, Any], Awaitable[Answer]]

HANDLERS: dict[type[Any], Handler] = {
    p.RecordTask: record.record_task,
    p.Complete: endings.end,
    p.Fail: endings.end,
    p.AwaitTaskRetry: endings.end,
    p.Retry: endings.retry,
    p.Sleep: sleeps.sleep,
    p.ResumeSleep: sleeps.resume_sleep,
    p.AwaitEvent: waits.await_event,
    p.AwaitChild: waits.await_child,
    p.Yield: yields.yield_run,
    p.StartChild: children.start_child,
}
"""The one handler of each command kind."""


class CommandTooLarge(CoreError):
    """One command is larger than the largest request the server takes."""

    code = "payload_too_large"

    def __init__(self) -> None:
        super().__init__("the command exceeds the server's size limit")


async def apply_commands(
    svc: Services, ns: str, commands: Sequence[p.Command], *, limit: int | None = None
) -> list[Outcome]:
    """Apply ``commands``; one outcome per command, in order.

    ``limit``: the most bytes one command may take as JSON (a larger one is refused with
    :class:`CommandTooLarge`); None when the request carrying them was limited as a whole.
    """
    by_run: dict[str, list[int]] = {}
    for index, command in enumerate(commands):
        by_run.setdefault(command.run_id, []).append(index)
    if len(by_run) == 1:  # the common case: no task to spawn
        return await _apply_run(svc, ns, list(commands), limit)
    outcomes: list[Outcome | None] = [None] * len(commands)

    async def one_run(indexes: list[int]) -> None:
        applied = await _apply_run(svc, ns, [commands[i] for i in indexes], limit)
        for index, outcome in zip(indexes, applied, strict=True):
            outcomes[index] = outcome

    await asyncio.gather(*(one_run(indexes) for indexes in by_run.values()))
    return [o for o in outcomes if o is not None]


async def apply_command(svc: Services, ns: str, command: p.Command) -> Answer:
    """Apply one command; raises the exception it is refused with."""
    return await HANDLERS[type(command)](svc, ns, command)


async def _apply_run(svc: Services, ns: str, commands: list[p.Command], limit: int | None) -> list[Outcome]:
    """The commands of one run, in order; the first refusal refuses the rest."""
    outcomes: list[Outcome] = []
    while len(outcomes) < len(commands):
        command = commands[len(outcomes)]
        following = commands[len(outcomes) + 1] if len(outcomes) + 1 < len(commands) else None
        try:
            _check_size(command, limit)
            if isinstance(command, p.RecordTask) and _ends_after(command, following, limit):
                assert isinstance(following, endings.Ending)
                outcomes += await endings.record_and_end(svc, ns, command, following)
            else:
                outcomes.append(await apply_command(svc, ns, command))
        except Exception as exc:  # the refusal answers this command and every later one of the run
            outcomes.append(exc)
        if outcomes and isinstance(outcomes[-1], Exception):
            outcomes += [outcomes[-1]] * (len(commands) - len(outcomes))
    return outcomes


def _check_size(command: p.Command, limit: int | None) -> None:
    """One command may be no larger than the largest request the server takes."""
    if limit is not None and len(msgspec.json.encode(command)) > limit:
        raise CommandTooLarge()


def _ends_after(record: p.RecordTask, following: p.Command | None, limit: int | None) -> bool:
    """Whether ``following`` is an ending to apply together with ``record`` (same run, same revision)."""
    return (
        isinstance(following, (p.Complete, p.Fail, p.AwaitTaskRetry))
        and following.revision == record.revision
        and (limit is None or len(msgspec.json.encode(following)) <= limit)
    )
