"""The error answers of every operation in the OpenAPI document, from what each route is.

Litestar documents what a handler returns on success and one generic 400 body we never send.
Every error this API answers is RFC 9457 ``application/problem+json`` shaped as
``protocol.Problem`` (``aiki.api.errors``), and which errors a route can give follows from what the
route is, not from a list kept by hand:

=====  ==================================================================================
 400   it takes input (parameters or a body) or writes: malformed JSON, a wrong transition
 401   it is authenticated (IAM on, non-public action); with ``WWW-Authenticate``
 403   it is authenticated (a role that falls short), or it writes (a cross-origin request)
 404   it has path parameters, or acts in an organization or namespace (another tenant's id)
 409   it writes (a stale revision, a duplicate, a concurrent change)
 413   it takes a body larger than the server's limit
 415   it takes a JSON body (another content type)
 422   it takes input: a value the schema or the server's rules refuse
 429   it is rate limited: every authenticated route and every public write (login, sign-up)
 503   every route: the database is unavailable; with ``Retry-After``
=====  ==================================================================================

A route that can answer more (the OIDC routes: the provider's errors) adds statuses to its
``opt`` with :func:`problems`; a status a route documents itself (``responses=``) is kept as it
is. Authenticated operations also declare their ``security`` (API key and/or session cookie), so
clients and fuzzers know which credentials each takes.

:func:`document_operations` runs once at startup and edits the document Litestar built.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from typing import Any, Union, get_args, get_origin

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.routes import HTTPRoute

from aiki.api.auth import NAMESPACE_HEADER, SESSION_COOKIE, declared_action
from aiki.api.errors import PROBLEM_MEDIA_TYPE, TITLES
from aiki.iam.policy import Rule, rule
from aiki.worker_sdk import protocol
from aiki.worker_sdk.protocol import Problem

PROBLEM_SCHEMA = "Problem"
API_KEY_SCHEME = "apiKey"
SESSION_SCHEME = "session"
_PROBLEMS_OPT = "problems"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WHY: dict[int, str] = {
    400: "The request is malformed (a body that is not JSON) or not possible now (a wrong transition).",
    401: "No credentials, or credentials that are not valid.",
    403: "The caller's role does not allow this action, or a cross-origin request was refused.",
    404: "The target does not exist, or belongs to another tenant.",
    409: "The request conflicts with the current state (a stale revision, a duplicate).",
    413: "The request body exceeds the server's size limit.",
    415: "The request body is not JSON.",
    422: "A value in the request is not valid (`field` names it).",
    429: "Too many requests; retry after `Retry-After` seconds.",
    502: "An upstream service (the OpenID provider) failed.",
    503: "The database is unavailable; retry after `Retry-After` seconds.",
}
_HEADERS: dict[int, dict[str, str]] = {
    401: {"WWW-Authenticate": "The authentication scheme to use (`Bearer`)."},
    429: {"Retry-After": "Seconds to wait before retrying."},
    503: {"Retry-After": "Seconds to wait before retrying."},
}


def problems(*statuses: int) -> dict[str, Any]:
    """``opt`` entries for error statuses a route answers beyond those its shape implies.

    Example: ``@get("/callback", opt=policy("public") | problems(401, 403, 502))``.
    """
    return {_PROBLEMS_OPT: tuple(statuses)}


def problem_schema() -> Schema:
    """The JSON schema of ``protocol.Problem``, read from the struct so the two cannot drift apart.

    ``None`` fields are left out of the body (``omit_defaults``), so optional fields are never null.
    """
    properties: dict[str, Schema | Reference] = {}
    required: list[str] = []
    for f in msgspec.structs.fields(Problem):
        properties[f.encode_name] = Schema(type=_openapi_type(f.type))
        if f.required:
            required.append(f.encode_name)
    return Schema(
        type=OpenAPIType.OBJECT,
        title="Problem",
        description="An RFC 9457 problem; `code` is stable and names the error.",
        properties=properties,
        required=required,
    )


def _document_array_like(schemas: dict[str, Schema]) -> None:
    """Structs sent as arrays (``array_like``, e.g. ``VersionRef``: ``["wf", "1"]``) are documented
    as Litestar documents every struct, an object; say what they are: a tuple of their fields."""
    for name, schema in schemas.items():
        struct = getattr(protocol, name, None)
        if not isinstance(schema, Schema) or not isinstance(struct, type) or not issubclass(struct, msgspec.Struct):
            continue
        if not struct.__struct_config__.array_like or not isinstance(schema.properties, dict):
            continue
        fields = msgspec.structs.fields(struct)
        schemas[name] = Schema(
            type=OpenAPIType.ARRAY,
            title=schema.title,
            description=f"An array: [{', '.join(f.encode_name for f in fields)}].",
            prefix_items=[schema.properties[f.encode_name] for f in fields],
            min_items=sum(1 for f in fields if f.required),
            max_items=len(fields),
        )


def _openapi_type(annotation: Any) -> OpenAPIType:
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _openapi_type(members[0])
    if annotation is str:
        return OpenAPIType.STRING
    if annotation is int:
        return OpenAPIType.INTEGER
    raise TypeError(f"Problem has a field of type {annotation!r}: teach aiki.api.openapi_docs to document it")


def document_operations(app: Litestar) -> None:
    """Declare the error answers and the credentials of every operation of ``app``'s document."""
    doc = app.openapi_schema
    iam_on = app.state.get("iam") is not None
    components = doc.components if isinstance(doc.components, Components) else Components()
    doc.components = components
    components.schemas = {**(components.schemas or {}), PROBLEM_SCHEMA: problem_schema()}
    _document_array_like(components.schemas)
    if iam_on:
        components.security_schemes = {
            **(components.security_schemes or {}),
            API_KEY_SCHEME: SecurityScheme(type="http", scheme="bearer", description="An API key."),
            SESSION_SCHEME: SecurityScheme(
                type="apiKey",
                name=SESSION_COOKIE,
                security_scheme_in="cookie",
                description="The session cookie set by login. For a namespace action, name the "
                f"namespace with the `{NAMESPACE_HEADER}` header (unless the path does).",
            ),
        }
    for handler, method, operation in _operations(app):
        action = declared_action(handler, "", method)
        r = rule(action) if action is not None else None
        extra = handler.opt.get(_PROBLEMS_OPT, ())
        statuses = sorted(set(error_statuses(operation, method, r, iam_on=iam_on)) | set(extra))
        _declare(operation, statuses, explicit=set(handler.responses or {}))
        if iam_on and r is not None and r.scope != "public":
            operation.security = _security(r)


def error_statuses(operation: Operation, method: str, r: Rule | None, *, iam_on: bool) -> Iterator[int]:
    """The error statuses an operation can answer, from what it is (see the module's table)."""
    params = [p for p in operation.parameters or [] if not isinstance(p, Reference)]
    has_path_params = any(p.param_in == "path" for p in params)
    body = operation.request_body if not isinstance(operation.request_body, Reference) else None
    writes = method not in _SAFE_METHODS
    authenticated = iam_on and r is not None and r.scope != "public"
    tenant_scoped = iam_on and r is not None and r.scope in ("organization", "namespace")
    takes_input = bool(params) or body is not None or tenant_scoped  # a session names its namespace
    if takes_input or writes:
        yield 400
    if authenticated:
        yield 401
    if authenticated or (iam_on and writes):
        yield 403
    if has_path_params or tenant_scoped:
        yield 404
    if writes:
        yield 409
    if body is not None:
        yield 413
        if "application/json" in (body.content or {}):
            yield 415
    if takes_input:
        yield 422
    if authenticated or (iam_on and writes):
        yield 429
    yield 503


def _declare(operation: Operation, statuses: list[int], *, explicit: set[int]) -> None:
    responses = operation.responses = dict(operation.responses or {})
    for code in list(responses):
        # Litestar's generic 400 describes a body this API never sends: every error is a problem.
        if code.isdigit() and int(code) >= 400 and int(code) not in explicit:
            del responses[code]
    for status in statuses:
        existing = responses.get(str(status))
        if isinstance(existing, OpenAPIResponse) and status in explicit:
            existing.headers = {**_header_specs(status), **(existing.headers or {})} or None
            continue
        responses[str(status)] = OpenAPIResponse(
            description=f"{TITLES.get(status, 'Error')}. {_WHY.get(status, '')}".strip(),
            headers=_header_specs(status) or None,
            content={
                PROBLEM_MEDIA_TYPE: OpenAPIMediaType(schema=Reference(ref=f"#/components/schemas/{PROBLEM_SCHEMA}"))
            },
        )


def _header_specs(status: int) -> dict[str, OpenAPIHeader | Reference]:
    return {
        name: OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), description=text, required=True)
        for name, text in _HEADERS.get(status, {}).items()
    }


def _security(r: Rule) -> list[dict[str, list[str]]]:
    schemes: list[dict[str, list[str]]] = []
    if r.scope == "namespace" and r.key_roles:
        schemes.append({API_KEY_SCHEME: []})
    if r.scope in ("user", "organization") or r.session_roles:
        schemes.append({SESSION_SCHEME: []})
    return schemes


def _operations(app: Litestar) -> Iterator[tuple[HTTPRouteHandler, str, Operation]]:
    """Each documented ``(handler, METHOD, operation)`` of the app."""
    paths = app.openapi_schema.paths or {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path_item = paths.get(re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path))
        if path_item is None:
            continue
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            for method in handler.http_methods:
                operation = getattr(path_item, method.lower(), None)
                if isinstance(operation, Operation):
                    yield handler, method, operation
