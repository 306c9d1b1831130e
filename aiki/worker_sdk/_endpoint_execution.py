"""One push delivery executed: one activation run to its outcome, or handed back at a time limit.

The activation is executed by the engine a worker uses (:class:`~aiki.worker_sdk._execution.Execution`),
with two differences: no sleep is held in memory (a serverless function must not idle: every sleep,
event wait, child wait and task retry wait suspends the run and releases it), and no heartbeat
(the server keeps the lease alive while its POST is in flight).

*Time limit.* Shortly before the delivery's time limit the execution is handed back
(:meth:`EndpointExecution.hand_back`): task attempts under way are cancelled (their handlers get
``asyncio.CancelledError``) and not recorded; attempts that finished have their records written (a
deferred one included); nothing else is written. The answer is ``handed_back``: the server puts
the run back, and the next delivery replays what was recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, NamedTuple

from aiki.worker_sdk._execution import Execution
from aiki.worker_sdk._run_writer import Abandon, Suspend
from aiki.worker_sdk._worker_connection import WorkerConnection
from aiki.worker_sdk.definitions import WorkflowVersion
from aiki.worker_sdk.errors import RunNotFoundError, ServerUnavailableError, StaleRevisionError
from aiki.worker_sdk.protocol import Activation, DeliveryAnswer, DeliveryOutcome

log = logging.getLogger("aiki.endpoint")

# The execution stops this long before the time limit, to write the records of the attempts that
# finished and to answer before the server (or the function's platform) gives up: a tenth of the
# limit, at least a quarter second (or a quarter of a shorter limit), at most two seconds.
_MARGIN_MAX_S = 2.0
_MARGIN_MIN_S = 0.25
_MARGIN_FRACTION = 0.1
# A write is retried while the server is unavailable for at most this long (as a worker's).
_RETRY_BUDGET_S = 30.0


class Reply(NamedTuple):
    """An HTTP answer: its status and its JSON body."""

    status: int
    body: Any


class EndpointExecution(Execution):
    """An execution that can be handed back at a time limit (see the module docstring)."""

    async def hand_back(self, grace: float) -> None:
        """Stop now: cancel attempts under way, write the records of finished ones (within ``grace`` s)."""
        self.writer.closing = True
        for task in self._invoking:
            if task is not None:
                task.cancel()
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()  # every attempt under way ended: recorded, or cancelled unrecorded
                await self.writer.close()  # the write under way answered, a deferred record sent
        except (TimeoutError, Suspend, Abandon):
            pass
        self.stop()

    def stop(self) -> None:
        """Write nothing more; cancel the workflow's coroutines."""
        self._stop()


def margin(limit_s: float) -> float:
    """How long before ``limit_s`` an execution is handed back."""
    return min(_MARGIN_MAX_S, max(limit_s * _MARGIN_FRACTION, min(_MARGIN_MIN_S, limit_s / 4)))


async def execute(
    connection: WorkerConnection, version: WorkflowVersion[Any, Any], activation: Activation, limit_s: float
) -> Reply:
    """Execute ``activation`` within ``limit_s`` seconds; the endpoint's answer."""
    spare = margin(limit_s)
    execution = EndpointExecution(
        connection,
        version,
        activation,
        retry_budget=max(0.0, min(_RETRY_BUDGET_S, limit_s - spare)),
        may_hold=None,
        worker_id=None,
        claimed_at=time.monotonic(),
    )
    running = asyncio.create_task(execution.execute(), name=f"aiki-push-{activation.run_id}")
    handed_back = False
    try:
        done, _ = await asyncio.wait({running}, timeout=max(0.0, limit_s - spare))
        if not done:
            handed_back = True
            log.info("run %s: time limit reached, handing the run back", activation.run_id)
            await execution.hand_back(spare / 2)
            await asyncio.wait({running}, timeout=spare / 2)
    finally:
        if not running.done():  # the request was cancelled, or the workflow ignores cancellation
            execution.stop()
            running.cancel()
    return _reply(execution, running, handed_back)


def _reply(execution: Execution, running: asyncio.Task[None], handed_back: bool) -> Reply:
    activation = execution.activation
    crash = None if running.cancelled() or not running.done() else running.exception()
    if crash is not None:
        log.error("run %s: the execution crashed", activation.run_id, exc_info=crash)
        return Reply(500, {"error": f"the execution crashed: {type(crash).__name__}"})
    error = execution.writer.abandoned_by or execution.writer.unavailable
    outcome: DeliveryOutcome
    if execution.outcome is not None:
        outcome = execution.outcome
    elif isinstance(error, StaleRevisionError):
        outcome = "superseded"
    elif isinstance(error, RunNotFoundError):
        return Reply(404, {"error": f"run {activation.run_id} is not known to the server"})
    elif isinstance(error, ServerUnavailableError):
        return Reply(503, {"error": f"the Aiki server is unavailable: {error}"})
    elif error is not None:
        return Reply(502, {"error": f"the Aiki server refused a write ({error.code}): {error}"})
    else:
        # Handed back at the time limit, or stopped without an outcome: the server puts the run back.
        outcome = "handed_back"
        if not handed_back:
            log.warning("run %s: the execution stopped without an outcome; handing it back", activation.run_id)
    return Reply(200, DeliveryAnswer(outcome=outcome, run_id=activation.run_id, revision=activation.revision))
