"""Errors to RFC 9457 problem+json.

The core raises errors with stable codes and no HTTP knowledge; the HTTP status of each comes from
the one catalogue of error codes (``aiki.worker_sdk.error_codes``). A response never carries a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    ClientException,
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    SerializationException,
    ValidationException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from aiki.api.request_checks import JsonTooDeep
from aiki.platform.db.integrity import CONFLICT_DETAIL, describe, integrity_violation
from aiki.platform.db.raw import is_connection_failure
from aiki.platform.db.value_errors import is_value_out_of_range
from aiki.platform.domain.errors import CoreError, RateLimited
from aiki.worker_sdk import error_codes as codes
from aiki.worker_sdk.protocol import Problem

log = logging.getLogger("aiki.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"

# Every code's status, from the one catalogue of error codes.
STATUS_BY_CODE: Mapping[str, int] = codes.HTTP_STATUS

TITLES: dict[int, str] = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    429: "Too many requests",
    422: "Validation failed",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
}


def problem_body(code: str, detail: str, instance: str, **extra: Any) -> Problem:
    """The problem+json document for an error ``code`` (its status from the table)."""
    status = STATUS_BY_CODE.get(code, 400)
    return Problem(
        type=f"https://aiki.dev/problems/{code.replace('_', '-')}",
        title=TITLES.get(status, "Error"),
        status=status,
        code=code,
        detail=detail,
        instance=instance,
        **extra,
    )


def problem_for_exception(exc: Exception, instance: str) -> Problem:
    """The problem a route answers when its service call raised ``exc`` (core errors, database trouble, bugs).

    For answers that are not a whole HTTP response, such as one operation of a worker batch.
    """
    if isinstance(exc, CoreError):
        return problem_body(exc.code, exc.message, instance, field=exc.field, run_id=exc.run_id)
    if _is_db_unavailable(exc):
        log.warning("database unavailable: %s", exc)
        return problem_body(codes.UNAVAILABLE, "the database is unavailable; retry shortly", instance)
    if is_value_out_of_range(exc):
        log.warning("value out of range on %s: %s", instance, (str(exc).splitlines() or [""])[0][:300])
        return problem_body(codes.VALIDATION_ERROR, _OUT_OF_RANGE_DETAIL, instance)
    if (violation := integrity_violation(exc)) is not None:
        log.warning("conflict on %s: %s", instance, describe(violation))
        return problem_body(codes.CONFLICT, CONFLICT_DETAIL, instance)
    log.exception("unhandled error on %s", instance)
    return problem_body(codes.INTERNAL_ERROR, "an internal error occurred; it has been logged", instance)


def problem(
    request: Request[Any, Any, Any], code: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Response[bytes]:
    body = problem_body(code, detail, request.url.path, **extra)
    status = body.status
    headers = dict(headers or {})
    if status in (429, 503):  # documented on every 429 and 503 (aiki.api.openapi_docs)
        headers.setdefault("Retry-After", "1")
    if status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="aiki"')
    return Response(msgspec.json.encode(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _core_error(request: Request[Any, Any, Any], exc: CoreError) -> Response[bytes]:
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, RateLimited) else None
    return problem(request, exc.code, exc.message, headers=headers, field=exc.field, run_id=exc.run_id)


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    field = None
    messages = []
    for item in extra:
        if isinstance(item, dict):
            key = item.get("key")
            field = field or (f"$.{key}" if key else None)
            messages.append(f"{key}: {item.get('message')}" if key else str(item.get("message")))
    detail = "; ".join(messages) or exc.detail
    return problem(request, codes.VALIDATION_ERROR, detail, field=field)


def _client_error(request: Request[Any, Any, Any], exc: ClientException) -> Response[bytes]:
    if exc.status_code != 400:
        return _http_error(request, exc)
    if isinstance(exc, JsonTooDeep):
        return problem(request, codes.MALFORMED_JSON, exc.detail)
    if isinstance(exc.__cause__, SerializationException) or "malformed" in exc.detail.lower():
        return problem(request, codes.MALFORMED_JSON, f"the request body is not valid JSON: {exc.detail}")
    return problem(request, codes.BAD_REQUEST, exc.detail)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    # Litestar's own headers are part of the answer: a 405 lists the allowed methods (``Allow``,
    # RFC 9110 §15.5.6), whatever the method (``TRACE`` included).
    headers = dict(exc.headers or {})
    if isinstance(exc, RequestEntityTooLarge) or exc.status_code == 413:
        return problem(request, codes.PAYLOAD_TOO_LARGE, "the request body exceeds the server's size limit")
    if isinstance(exc, NotFoundException):
        return problem(request, codes.NOT_FOUND, exc.detail, headers=headers)
    if isinstance(exc, MethodNotAllowedException):
        return problem(request, codes.METHOD_NOT_ALLOWED, exc.detail, headers=headers)
    code = {
        401: codes.UNAUTHORIZED,
        403: codes.FORBIDDEN,
        415: codes.UNSUPPORTED_MEDIA_TYPE,
        503: codes.UNAVAILABLE,
    }.get(exc.status_code, codes.BAD_REQUEST)
    return problem(request, code, exc.detail, headers=headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    if _is_db_unavailable(exc):
        log.warning("database unavailable: %s", exc)
        return problem(request, codes.UNAVAILABLE, "the database is unavailable; retry shortly")
    if is_value_out_of_range(exc):
        # The request passed its schema but a value does not fit its column (an integer beyond its
        # bits, a string longer than the column, a NUL in PostgreSQL text): the caller's input, a 422.
        first_line = (str(exc).splitlines() or [""])[0][:300]  # not the SQL parameters that follow
        log.warning("value out of range on %s %s: %s", request.method, request.url.path, first_line)
        return problem(request, codes.VALIDATION_ERROR, _OUT_OF_RANGE_DETAIL)
    if (violation := integrity_violation(exc)) is not None:
        # Logged by constraint only: the exception's text would carry the violating values.
        log.warning("conflict on %s %s: %s", request.method, request.url.path, describe(violation))
        return problem(request, codes.CONFLICT, CONFLICT_DETAIL)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(request, codes.INTERNAL_ERROR, "an internal error occurred; it has been logged")


def _is_db_unavailable(exc: BaseException) -> bool:
    return is_connection_failure(exc)


_OUT_OF_RANGE_DETAIL = (
    "a value in the request cannot be stored: a number out of range, a text too long or a NUL character"
)
EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    CoreError: _core_error,
    ValidationException: _validation_error,
    ClientException: _client_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
