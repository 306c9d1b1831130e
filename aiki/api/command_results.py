"""Commands' outcomes as the wire's :class:`~aiki.worker_sdk.protocol.CommandResult` (HTTP route and local port)."""

from __future__ import annotations

from collections.abc import Sequence

from aiki.api import wire
from aiki.api.errors import problem_for_exception
from aiki.platform.domain import values as v
from aiki.platform.services.commands.dispatch import Outcome
from aiki.worker_sdk import protocol as p

_API = "/api/v1"


def command_instance(command: p.Command) -> str:
    """The path a refusal of ``command`` names: its single-command route's."""
    if isinstance(command, p.RecordTask):
        return f"{_API}/runs/{command.run_id}/tasks"
    if isinstance(command, p.StartChild):
        return f"{_API}/runs/{command.run_id}/children"
    return f"{_API}/runs/{command.run_id}/transition"


def command_result(command: p.Command, outcome: Outcome) -> p.CommandResult:
    """The answer to one command: its response, or the problem its route would have answered."""
    if isinstance(outcome, Exception):
        return p.CommandResult(problem=problem_for_exception(outcome, command_instance(command)))
    if isinstance(outcome, v.Transitioned):
        return p.CommandResult(transition=wire.transitioned(outcome))
    if isinstance(outcome, v.TaskRecorded):
        return p.CommandResult(record=wire.task_recorded(outcome))
    return p.CommandResult(child=wire.child_started(outcome))


def command_results(commands: Sequence[p.Command], outcomes: Sequence[Outcome]) -> list[p.CommandResult]:
    return [command_result(c, o) for c, o in zip(commands, outcomes, strict=True)]
