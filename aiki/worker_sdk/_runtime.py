"""What a workflow's :class:`~aiki.worker_sdk.run.Run` needs from the engine executing it.

:class:`Runtime` is the narrow port between the user-facing side of the SDK (definitions, ``Run``,
its handles) and the engine (``_execution.py``), as temporalio's ``workflow._Runtime`` is. The
engine's ``Execution`` implements it structurally; the user-facing modules import only this
protocol, never the engine, so there is no import circle between them and a test can drive a
``Run`` with a fake runtime.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aiki.worker_sdk.definitions import WorkflowVersion
    from aiki.worker_sdk.protocol import Activation
    from aiki.worker_sdk.run import ChildHandle, ChildResult, EventResult, SleepResult
    from aiki.worker_sdk.tasks import Task


class ReplayView(Protocol):
    """The part of the replay state a ``Run`` reads."""

    @property
    def replaying(self) -> bool:
        """True while the workflow re-executes what an earlier execution already did."""
        ...


class Runtime(Protocol):
    """The operations a ``Run`` delegates to the engine executing its activation.

    Every operation is durable: it is replayed from the activation's history when recorded there,
    and recorded (fenced by the run's revision) when new.
    """

    @property
    def activation(self) -> Activation:
        """The activation being executed (run id, attempt, workflow, version, history)."""
        ...

    @property
    def state(self) -> ReplayView:
        """The replay state of this execution."""
        ...

    async def call_task(self, task: Task[Any, Any], input: Any) -> Any:
        """Run ``task`` on ``input`` (or return its recorded output) and return its output."""
        ...

    async def sleep(self, duration: timedelta, name: str) -> SleepResult:
        """Sleep durably for ``duration``; the ``n``-th sleep named ``name`` is the same on replay."""
        ...

    async def wait_event(self, name: str, type: Any, timeout: timedelta | None) -> EventResult[Any]:
        """Wait durably for the next event ``name``, decoded to ``type``, for at most ``timeout``."""
        ...

    async def start_child(self, version: WorkflowVersion[Any, Any], input: Any) -> ChildHandle[Any]:
        """Start (or find on replay) a child run of ``version`` on ``input``."""
        ...

    async def wait_child(self, child_id: str, output_type: Any, timeout: timedelta | None) -> ChildResult[Any]:
        """Wait durably until the child ``child_id`` ends, for at most ``timeout``."""
        ...
