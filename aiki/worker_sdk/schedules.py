"""Schedules: start runs of a workflow version on a cron or interval rule.

The server keeps the schedule and starts the runs (any server replica; each occurrence once), so
nothing needs to stay connected. Only ``httpx``/``msgspec`` are needed here: cron expressions and
time zones are validated by the server, which answers ``ValidationError`` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from aiki.worker_sdk import serde
from aiki.worker_sdk.errors import ValidationError
from aiki.worker_sdk.protocol import (
    ActivateScheduleRequest,
    ActivateScheduleResponse,
    OverlapPolicy,
    ScheduleListResponse,
    ScheduleView,
)

if TYPE_CHECKING:
    from aiki.worker_sdk.client import Client
    from aiki.worker_sdk.definitions import WorkflowVersion

I = TypeVar("I")  # noqa: E741 - the conventional name for an input type

_OVERLAP = ("allow", "skip", "cancel_previous")


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule rule, built by :func:`schedule`; :meth:`activate` attaches it to a version.

    Attributes:
        cron: A 5-field cron expression (or ``@daily``-style alias), read in ``timezone``.
        every: A fixed interval, aligned to the Unix epoch (``every=timedelta(hours=1)`` fires on
            the hour, UTC).
        timezone: IANA time zone of ``cron`` (``"UTC"`` by default).
        overlap: What an occurrence does while the previous run of the schedule is still live.
    """

    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"
    overlap: OverlapPolicy = "skip"

    async def activate(
        self,
        client: Client,
        version: WorkflowVersion[I, Any],
        input: I | None = None,
        *,
        reference_id: str | None = None,
    ) -> ScheduleHandle:
        """Create the schedule on the server, or find the same one; runs start from the next occurrence.

        Activating the same rule for the same version and input again (say, on every deploy)
        returns the existing schedule, including its paused state. With ``reference_id``, the
        reference is the identity instead: the same reference with another definition raises
        ``ReferenceConflictError``.

        Start options of ``version`` (``version.with_options(retry=..., pool=...)``) apply to every
        run the schedule starts and are part of its definition. ``reference_id``, ``conflict``
        and ``delay`` cannot apply to scheduled runs (the schedule names each occurrence's run
        and starts it at the occurrence) and are refused with ``ValidationError``. Unlike a
        run start, activation requires a version some worker has registered, so its input is
        checked once, here, for every occurrence to come.

        Args:
            client: The Aiki client.
            version: The workflow version each occurrence starts a run of, with its start options.
            input: The input of every run; it must fit the version's input type.
            reference_id: An explicit identity for the schedule.

        Returns:
            A handle on the schedule (``handle.created`` says whether this call created it).

        Raises:
            ValidationError: The input does not fit its type, or ``version`` carries an option a
                schedule cannot honour (nothing is sent; ``field`` names the option), or the server
                refused the rule (``field`` names it: ``$.cron``, ``$.timezone`` ...).
            WorkflowNotFoundError: No worker registered the version yet.
            ReferenceConflictError: ``reference_id`` names a schedule with another definition.

        Example:
            >>> from aiki import schedule
            >>> nightly = schedule(cron="0 9 * * *", timezone="Europe/Berlin", overlap="skip")
            >>> nightly.every is None
            True

            Activating it needs a server and a version some worker registered::

                handle = await nightly.activate(client, report_v1, ReportInput(team="ops"))
                await handle.pause()
                await handle.resume()
                await handle.delete()
        """
        options = version._options
        refused = [
            name
            for name, given in (
                ("reference_id", options.reference_id is not None),
                ("conflict", options.conflict != "error"),
                ("delay", options.delay is not None),
            )
            if given
        ]
        if refused:
            # Each occurrence's run is named by the schedule (its reference id) and starts at the
            # occurrence: these options cannot apply, and dropping them would hide that.
            raise ValidationError(
                f"a schedule cannot start runs with with_options({refused[0]}=...): each occurrence names its "
                "run by the reference id schedule:{id}:{occurrence} and starts it at the occurrence "
                "(to start later, shift the rule); only retry= and pool= apply to scheduled runs",
                field=refused[0],
            )
        raw = serde.encode_checked(input, version.input_type)
        request = ActivateScheduleRequest(
            workflow=version.name,
            version=version.version,
            input=msgspec.Raw(raw),
            cron=self.cron,
            every_ms=None if self.every is None else int(self.every.total_seconds() * 1000),
            timezone=self.timezone,
            overlap=self.overlap,
            reference_id=reference_id,
            retry=None if options.retry is None else options.retry.to_wire(),
            pool=options.pool,
        )
        response = await client.request("POST", "/schedules", ActivateScheduleResponse, request)
        return ScheduleHandle(client, response.schedule.id, created=response.created)


def schedule(
    cron: str | None = None,
    *,
    every: timedelta | None = None,
    timezone: str = "UTC",
    overlap: OverlapPolicy = "skip",
) -> Schedule:
    """Declare a schedule rule: a cron expression in a time zone, or a fixed interval.

    Each occurrence starts one run, whose reference id is ``schedule:{schedule_id}:{occurrence}``
    (the occurrence as ISO 8601 UTC, e.g. ``2026-03-29T07:00:00Z``). Overlap policies, for an
    occurrence that comes while the schedule's previous run is still live:

    * ``"skip"`` (default): start nothing for this occurrence;
    * ``"cancel_previous"``: cancel the previous run, then start the new one;
    * ``"allow"``: start the new run regardless.

    After downtime, ``"allow"`` starts a run for every missed occurrence; ``"skip"`` and
    ``"cancel_previous"`` start only the latest missed one. Across daylight-saving changes a
    wall-clock time that does not exist fires when the gap ends (``30 2 * * *`` in Berlin on the
    spring-forward day fires at 03:00), and one that happens twice fires once, the first time.

    Args:
        cron: A 5-field cron expression (minute hour day-of-month month day-of-week) or an
            alias such as ``"@daily"``.
        every: A fixed interval of at least one second, aligned to the Unix epoch.
        timezone: IANA time zone the cron expression is read in; intervals are always UTC.
        overlap: ``"skip"``, ``"cancel_previous"`` or ``"allow"``.

    Returns:
        The rule; call :meth:`Schedule.activate` to attach it to a workflow version.

    Raises:
        ValidationError: Neither or both of ``cron`` and ``every``, a non-positive interval, or an
            unknown overlap policy.

    Example:
        >>> from datetime import timedelta
        >>> from aiki import schedule
        >>> schedule(cron="0 9 * * *", timezone="Europe/Berlin", overlap="skip").cron
        '0 9 * * *'
        >>> schedule(every=timedelta(hours=1)).overlap
        'skip'
    """
    if (cron is None) == (every is None):
        raise ValidationError("give exactly one of cron= and every=", field="cron")
    if every is not None and every < timedelta(seconds=1):
        raise ValidationError(f"every= must be at least one second, got {every}", field="every")
    if overlap not in _OVERLAP:
        raise ValidationError(f"overlap= must be one of {', '.join(_OVERLAP)}, got {overlap!r}", field="overlap")
    return Schedule(cron=cron, every=every, timezone=timezone, overlap=overlap)


class ScheduleHandle:
    """A handle on one schedule on the server.

    Build one from an id with ``ScheduleHandle(client, schedule_id)``, or get it from
    :meth:`Schedule.activate`.

    Attributes:
        id: The schedule id.
        created: Whether the :meth:`Schedule.activate` call that returned it created the schedule
            (False when it found an existing one; also False for a handle built from an id).
    """

    def __init__(self, client: Client, schedule_id: str, *, created: bool = False) -> None:
        """A handle on the schedule ``schedule_id``; nothing is sent until a method is called.

        Args:
            client: The Aiki client.
            schedule_id: The schedule's id.
            created: Whether the schedule was just created (see :attr:`created`).
        """
        self._client = client
        self.id = schedule_id
        self.created = created

    async def describe(self) -> ScheduleView:
        """The schedule as the server sees it now (status, next and last occurrence, last run).

        Raises:
            NotFoundError: The schedule was deleted.
        """
        return await self._client.request("GET", f"/schedules/{self.id}", ScheduleView)

    async def pause(self) -> ScheduleView:
        """Stop starting runs until :meth:`resume`; runs already started are not touched.

        Returns:
            The schedule as it is now (``status`` is ``paused``).
        """
        return await self._client.request("POST", f"/schedules/{self.id}/pause", ScheduleView)

    async def resume(self) -> ScheduleView:
        """Start runs again, from the first occurrence after now (the paused time is not caught up).

        Returns:
            The schedule as it is now (``status`` is ``active``).
        """
        return await self._client.request("POST", f"/schedules/{self.id}/resume", ScheduleView)

    async def delete(self) -> ScheduleView:
        """Delete the schedule (runs it started are not touched); returns it as it was.

        Raises:
            NotFoundError: The schedule was already deleted.
        """
        return await self._client.request("DELETE", f"/schedules/{self.id}", ScheduleView)

    def __repr__(self) -> str:
        """``<ScheduleHandle id>``."""
        return f"<ScheduleHandle {self.id}>"


async def list_schedules(client: Client, **filters: str) -> ScheduleListResponse:
    """``GET /schedules``: the namespace's schedules, newest first.

    Args:
        client: The Aiki client.
        **filters: ``workflow``, ``version``, ``status`` (``active``/``paused``), ``cursor``, ``limit``.

    Returns:
        One page of schedules and the cursor of the next.
    """
    return await client.request("GET", "/schedules", ScheduleListResponse, params=filters)
