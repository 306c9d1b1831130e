"""Tasks: :func:`task` and the :class:`Task` it builds, a memoized unit of work of a workflow.

Example:
    >>> import asyncio
    >>> from aiki import task
    >>> @task()
    ... async def greet(name: str) -> str:
    ...     return f"hello {name}"
    >>> asyncio.run(greet("ada"))  # calling a task calls the plain function
    'hello ada'
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from aiki.worker_sdk._signatures import handler_hints, positional_params
from aiki.worker_sdk.retry import RetryPolicy

if TYPE_CHECKING:
    from aiki.worker_sdk.run import Run

I = TypeVar("I")  # noqa: E741 - the conventional name for an input type
O = TypeVar("O")  # noqa: E741


class Task(Generic[I, O]):
    """A memoized unit of work, built by :func:`task`.

    Calling the object calls the plain function (handy in unit tests); :meth:`start` runs it
    durably inside a workflow.

    Example:
        >>> import asyncio
        >>> from aiki import task
        >>> @task(name="double")
        ... def double(n: int) -> int:
        ...     return 2 * n
        >>> double(21)
        42
        >>> asyncio.run(double.invoke(21))
        42
        >>> double
        <Task 'double'>

    Attributes:
        name: The task's stable name (part of its address).
        retry: Retry policy of failed attempts.
        timeout: Per-attempt time limit, if any.
        input_type: The annotated input type (``Any`` if none).
        output_type: The annotated return type (``Any`` if none).
        takes_input: Whether the handler takes an input argument.
    """

    def __init__(self, fn: Callable[..., Any], name: str, retry: RetryPolicy | None, timeout: timedelta | None) -> None:
        """Wrap ``fn``; use :func:`task` rather than this constructor.

        Raises:
            TypeError: ``fn`` takes more than one positional argument.
        """
        params = positional_params(fn)
        if len(params) > 1:
            raise TypeError(f"task {name!r}: the handler takes at most one input argument")
        hints = handler_hints(fn)
        self.fn = fn
        self.name = name
        self.retry = retry or RetryPolicy.never()
        self.timeout = timeout
        self.takes_input = bool(params)
        self.input_type: Any = hints.get(params[0].name, Any) if params else Any
        self.output_type: Any = hints.get("return", Any)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the plain function, not durably (no run, no record): for unit tests and reuse."""
        return self.fn(*args, **kwargs)

    async def invoke(self, input: Any) -> Any:
        """Run one attempt of the handler (async directly, sync in a worker thread).

        Args:
            input: The input, ignored by a handler that takes none.

        Returns:
            What the handler returned.
        """
        args = (input,) if self.takes_input else ()
        if self.is_async:
            return await self.fn(*args)
        return await asyncio.to_thread(self.fn, *args)

    async def start(self, run: Run, input: I | None = None) -> O:
        """Run the task durably inside a workflow and return its output.

        On replay a completed call returns its recorded output without running the handler.

        Args:
            run: The workflow's run context.
            input: The task input (omit for a handler without input).

        Returns:
            The task's output (recorded once; replayed from the record afterwards).

        Raises:
            TaskFailedError: The task failed and its retry policy is spent.
        """
        result: O = await run._call_task(self, input)
        return result

    def __repr__(self) -> str:
        """``<Task 'name'>``."""
        return f"<Task {self.name!r}>"


class _TaskDecorator:
    def __init__(self, name: str | None, retry: RetryPolicy | None, timeout: timedelta | None) -> None:
        self.name, self.retry, self.timeout = name, retry, timeout

    @overload
    def __call__(self, fn: Callable[[I], Awaitable[O]]) -> Task[I, O]: ...
    @overload
    def __call__(self, fn: Callable[[], Awaitable[O]]) -> Task[None, O]: ...
    @overload
    def __call__(self, fn: Callable[[I], O]) -> Task[I, O]: ...
    @overload
    def __call__(self, fn: Callable[[], O]) -> Task[None, O]: ...
    def __call__(self, fn: Callable[..., Any]) -> Task[Any, Any]:
        return Task(fn, self.name or fn.__name__, self.retry, self.timeout)


def task(
    name: str | None = None, *, retry: RetryPolicy | None = None, timeout: timedelta | None = None
) -> _TaskDecorator:
    """Declare a task.

    Args:
        name: Stable name of the task (defaults to the function name). Renaming a task changes
            its address, so recorded results no longer match.
        retry: Retry policy of failed attempts (default: :meth:`RetryPolicy.never`, one attempt).
        timeout: Time limit of one attempt; an attempt that exceeds it fails with ``TimeoutError``.

    Returns:
        A decorator for an async or sync function of zero or one argument.

    Example:
        >>> from datetime import timedelta
        >>> from aiki import RetryPolicy, task
        >>> @task(retry=RetryPolicy.fixed(3, timedelta(seconds=5)), timeout=timedelta(minutes=1))
        ... async def fetch_rates(currency: str) -> dict[str, float]:
        ...     return {currency: 1.0}
        >>> fetch_rates.name, fetch_rates.retry.max_attempts, fetch_rates.timeout
        ('fetch_rates', 3, datetime.timedelta(seconds=60))
    """
    return _TaskDecorator(name, retry, timeout)
