"""Apply a list of executor commands: per run in order, runs independently (see ``protocol.commands``).

Each command is answered by its kind's response or by the exception it was refused with; the API
turns an exception into the problem its route would answer. Once a run's command is refused, that
run's later commands in the list get the same exception and are not applied.

A :class:`~aiki.worker_sdk.protocol.RecordTask` directly followed by an ending of the same run at
the same revision is applied together with it (one statement on PostgreSQL).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgspec

from aiki.platform.domain.errors import CoreError
from aiki.platform.services.commands import handlers
from aiki.platform.services.context import Services
from aiki.worker_sdk import protocol as p

Answer = p.RecordTaskResponse | p.TransitionResponse | p.StartChildResponse
"""What an applied command answers (by kind: a record, a transition, a child start)."""
Outcome = Answer | Exception
"""A command's answer, or the exception it was refused with."""


class CommandTooLarge(CoreError):
    """One command is larger than the largest request the server takes."""

    code = "payload_too_large"

    def __init__(self) -> None:
        super().__init__("the command exceeds the server's size limit")


# The endings a task record is applied together with (their one-statement path takes it along).
_FUSES_WITH_RECORD = (p.Complete, p.Fail, p.AwaitTaskRetry)


async def apply_commands(svc: Services, ns: str, commands: Sequence[p.Command]) -> list[Outcome]:
    """Apply ``commands``; one outcome per command, in order."""
    by_run: dict[str, list[int]] = {}
    for index, command in enumerate(commands):
        by_run.setdefault(command.run_id, []).append(index)
    outcomes: list[Outcome | None] = [None] * len(commands)

    async def one_run(indexes: list[int]) -> None:
        for index, outcome in zip(indexes, await _apply_run(svc, ns, [commands[i] for i in indexes]), strict=True):
            outcomes[index] = outcome

    await asyncio.gather(*(one_run(indexes) for indexes in by_run.values()))
    return [o for o in outcomes if o is not None]


async def apply_command(svc: Services, ns: str, command: p.Command) -> Answer:
    """Apply one command; raises the exception it is refused with."""
    outcome = (await _apply_run(svc, ns, [command]))[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


async def _apply_run(svc: Services, ns: str, commands: list[p.Command]) -> list[Outcome]:
    """The commands of one run, in order; the first refusal refuses the rest."""
    limit = svc.settings.max_payload_bytes
    outcomes: list[Outcome] = []
    i = 0
    while i < len(commands):
        command = commands[i]
        following = commands[i + 1] if i + 1 < len(commands) else None
        try:
            _check_size(command, limit)
            if isinstance(command, p.RecordTask) and _ends_after_record(command, following, limit):
                assert following is not None
                outcomes += await handlers.record_and_end(svc, ns, command, following)
                i += 2
                continue
            outcomes.append(await handlers.apply(svc, ns, command))
        except Exception as exc:  # the refusal answers this command and every later one of the run
            outcomes += [exc] * (len(commands) - len(outcomes))
            return outcomes
        i += 1
    return outcomes


def _check_size(command: p.Command, limit: int) -> None:
    """One command may be no larger than the largest request the server takes."""
    if len(msgspec.json.encode(command)) > limit:
        raise CommandTooLarge()


def _ends_after_record(record: p.RecordTask, following: p.Command | None, limit: int) -> bool:
    """Whether ``following`` is an ending to apply together with ``record`` (same run, same revision)."""
    return (
        isinstance(following, _FUSES_WITH_RECORD)
        and following.revision == record.revision
        and len(msgspec.json.encode(following)) <= limit
    )
