"""Whether a database error says a value from the request does not fit its column.

An integer beyond its bits, a string longer than its column, a NUL character in PostgreSQL text:
the caller's input, to be answered as such (4xx), never as an internal error: 422 on the API
(``aiki.api.errors``), a 400 page on the dashboard.
"""

from __future__ import annotations

_OUT_OF_RANGE = frozenset(
    {"OverflowError", "DataError", "NumericValueOutOfRangeError", "StringDataRightTruncationError"}
)


def is_value_out_of_range(exc: BaseException) -> bool:
    """True when ``exc`` or what it wraps is one of the drivers' "value does not fit" errors."""
    # Drivers wrap: SQLAlchemy's DBAPIError <- the adapter's Error <- asyncpg's DataError <- OverflowError.
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen or len(seen) > 10:
            continue
        seen.add(id(e))
        if any(cls.__name__ in _OUT_OF_RANGE for cls in type(e).__mro__):  # asyncpg's DataError subclasses
            return True
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]
    return False
