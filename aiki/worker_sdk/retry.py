"""Retry policies for tasks and workflow versions: :class:`RetryPolicy`.

Example:
    >>> from datetime import timedelta
    >>> from aiki import RetryPolicy
    >>> policy = RetryPolicy.exponential(5, timedelta(seconds=1), max_delay=timedelta(seconds=10))
    >>> [policy.delay_for(attempt).total_seconds() for attempt in range(1, 6)]
    [1.0, 2.0, 4.0, 8.0, 10.0]
    >>> policy.should_retry(4, RuntimeError("flaky")), policy.should_retry(5, RuntimeError("flaky"))
    (True, False)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from aiki.worker_sdk.protocol import RetryPolicyWire

RetryKind = Literal["never", "fixed", "exponential", "jittered"]


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often, and how far apart, a failed task or workflow is attempted again.

    Build one with the constructors :meth:`never`, :meth:`fixed`, :meth:`exponential` and
    :meth:`jittered`. ``max_attempts`` counts every attempt, the first included: ``1`` means no
    retry.

    Attributes:
        kind: The delay shape.
        max_attempts: Total attempts allowed (>= 1).
        base: Delay after the first failure.
        factor: Growth per further failure (exponential and jittered).
        max_delay: Upper bound on any delay, if set.
        non_retryable: Exception classes, or class names, that fail at once without retry. A name
            matches the class name or the dotted ``module.QualName`` of any class in the
            exception's MRO.
    """

    kind: RetryKind = "never"
    max_attempts: int = 1
    base: timedelta = timedelta(seconds=1)
    factor: float = 2.0
    max_delay: timedelta | None = None
    non_retryable: tuple[type[BaseException] | str, ...] = ()

    def __post_init__(self) -> None:
        """Check the bounds.

        Raises:
            ValueError: ``max_attempts`` is below 1 or ``factor`` below 1.0.
        """
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.factor < 1.0:
            raise ValueError("factor must be >= 1.0")

    @classmethod
    def never(cls) -> RetryPolicy:
        """One attempt, no retry (the default for tasks and workflows)."""
        return cls()

    @classmethod
    def fixed(
        cls,
        max_attempts: int,
        delay: timedelta,
        *,
        non_retryable: tuple[type[BaseException] | str, ...] = (),
    ) -> RetryPolicy:
        """The same ``delay`` between attempts.

        Args:
            max_attempts: Total attempts allowed, the first included.
            delay: Wait between a failure and the next attempt.
            non_retryable: Errors that are never retried.

        Returns:
            The policy.

        Example:
            >>> from datetime import timedelta
            >>> from aiki import RetryPolicy
            >>> RetryPolicy.fixed(3, timedelta(seconds=2)).delay_for(2)
            datetime.timedelta(seconds=2)
        """
        return cls("fixed", max_attempts, delay, 1.0, None, tuple(non_retryable))

    @classmethod
    def exponential(
        cls,
        max_attempts: int,
        base: timedelta,
        factor: float = 2.0,
        max_delay: timedelta | None = None,
        *,
        non_retryable: tuple[type[BaseException] | str, ...] = (),
    ) -> RetryPolicy:
        """Delays ``base``, ``base * factor``, ``base * factor**2`` ..., capped at ``max_delay``.

        Args:
            max_attempts: Total attempts allowed, the first included.
            base: Delay after the first failure.
            factor: Multiplier per further failure.
            max_delay: Cap on the delay.
            non_retryable: Errors that are never retried.

        Returns:
            The policy.
        """
        return cls("exponential", max_attempts, base, factor, max_delay, tuple(non_retryable))

    @classmethod
    def jittered(
        cls,
        max_attempts: int,
        base: timedelta,
        factor: float = 2.0,
        max_delay: timedelta | None = None,
        *,
        non_retryable: tuple[type[BaseException] | str, ...] = (),
    ) -> RetryPolicy:
        """Exponential delays, each drawn uniformly from half to all of the exponential value.

        The jitter spreads retries of many runs that failed together (a thundering herd) while
        keeping at least half the back-off.

        Args:
            max_attempts: Total attempts allowed, the first included.
            base: Delay after the first failure (before jitter).
            factor: Multiplier per further failure.
            max_delay: Cap on the delay (before jitter).
            non_retryable: Errors that are never retried.

        Returns:
            The policy.

        Example:
            >>> from datetime import timedelta
            >>> from aiki import RetryPolicy
            >>> delay = RetryPolicy.jittered(4, timedelta(seconds=8)).delay_for(1)
            >>> timedelta(seconds=4) <= delay <= timedelta(seconds=8)
            True
        """
        return cls("jittered", max_attempts, base, factor, max_delay, tuple(non_retryable))

    def delay_for(self, attempt: int) -> timedelta:
        """The wait after attempt number ``attempt`` (1-based, the one that just failed) failed.

        Args:
            attempt: The number of the attempt that failed, from 1.

        Returns:
            How long to wait before the next attempt (zero for :meth:`never`).
        """
        if self.kind == "never":
            return timedelta(0)
        if self.kind == "fixed":
            delay = self.base
        else:
            # Cap the exponent so a huge attempt count cannot overflow the float or timedelta.
            delay = self.base * min(self.factor ** min(max(attempt - 1, 0), 64), 1e9)
        if self.max_delay is not None and delay > self.max_delay:
            delay = self.max_delay
        if self.kind == "jittered":
            delay = delay * random.uniform(0.5, 1.0)
        return delay

    def is_retryable(self, error: BaseException) -> bool:
        """Whether ``error`` may be retried at all (it is not listed in ``non_retryable``).

        A :class:`~aiki.worker_sdk.errors.TaskFailedError` is also matched by the type name of the
        task's own error, so a workflow policy can refuse to retry a task's ``PaymentDeclined``.

        Args:
            error: The error the attempt failed with.

        Returns:
            False when ``error`` matches an entry of ``non_retryable``.

        Example:
            >>> from datetime import timedelta
            >>> from aiki import RetryPolicy
            >>> policy = RetryPolicy.fixed(3, timedelta(seconds=1), non_retryable=(KeyError, "PaymentDeclined"))
            >>> policy.is_retryable(KeyError("sku")), policy.is_retryable(TimeoutError())
            (False, True)
        """
        names = {c.__name__ for c in type(error).__mro__} | {
            f"{c.__module__}.{c.__qualname__}" for c in type(error).__mro__
        }
        task_error = getattr(error, "error", None)
        task_error_type = getattr(task_error, "type", None)
        if type(error).__name__ == "TaskFailedError" and isinstance(task_error_type, str):
            names.add(task_error_type)
        for item in self.non_retryable:
            if isinstance(item, str):
                if item in names:
                    return False
            elif isinstance(error, item):
                return False
        return True

    def should_retry(self, attempt: int, error: BaseException) -> bool:
        """Whether attempt number ``attempt`` (1-based), which failed with ``error``, gets another.

        Args:
            attempt: The number of the attempt that failed, from 1.
            error: The error it failed with.

        Returns:
            True when attempts are left and ``error`` is retryable.
        """
        return attempt < self.max_attempts and self.is_retryable(error)

    def to_wire(self) -> RetryPolicyWire:
        """The policy as it travels; classes in ``non_retryable`` become their names.

        Returns:
            The wire form, for a start request or a worker's registration.
        """
        return RetryPolicyWire(
            kind=self.kind,
            max_attempts=self.max_attempts,
            base_ms=_ms(self.base),
            factor=self.factor,
            max_delay_ms=None if self.max_delay is None else _ms(self.max_delay),
            non_retryable=[i if isinstance(i, str) else i.__name__ for i in self.non_retryable],
        )

    @classmethod
    def from_wire(cls, wire: RetryPolicyWire) -> RetryPolicy:
        """The policy a :class:`~aiki.worker_sdk.protocol.RetryPolicyWire` describes.

        Args:
            wire: The wire form.

        Returns:
            The policy; ``non_retryable`` holds class names.
        """
        return cls(
            kind=wire.kind,
            max_attempts=wire.max_attempts,
            base=timedelta(milliseconds=wire.base_ms),
            factor=wire.factor,
            max_delay=None if wire.max_delay_ms is None else timedelta(milliseconds=wire.max_delay_ms),
            non_retryable=tuple(wire.non_retryable),
        )
