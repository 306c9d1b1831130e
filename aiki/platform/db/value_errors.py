"""Whether a database error says a value from the request does not fit its column.

An integer beyond its bits, a string longer than its column, a NUL character in PostgreSQL text:
the caller's input, to be answered as such (4xx), never as an internal error: 422 on the API
(``aiki.api.errors``), a 400 page on the dashboard.
"""

from __future__ import annotations

from aiki.platform.db.errors import is_data_error


def is_value_out_of_range(exc: BaseException) -> bool:
    """True when ``exc`` or what it wraps says a value does not fit its column.

    PostgreSQL's data exceptions (SQLSTATE class 22), a value the driver refused to send (beyond its
    type's range), SQLite's ``OverflowError`` for an integer beyond 64 bits.
    """
    return is_data_error(exc)
