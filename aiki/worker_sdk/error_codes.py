"""Every error code of Aiki, defined once.

A code is the stable string a server error carries in its problem+json ``code`` and that each
exception class names in its ``code`` attribute. Three kinds of code exist:

- codes the core raises (``aiki.platform.domain.errors``, IAM included): each has an HTTP status
  here and an SDK exception class (``aiki.worker_sdk.errors.PROBLEM_CODES``);
- codes the HTTP layer answers on its own (a body it cannot parse, a race it lost ...): each has
  an HTTP status here;
- codes the SDK raises itself, which never travel on the wire (``SDK_CODES``).

The server may import this module (it is the SDK's wire vocabulary); the SDK imports no server
code. ``tests/architecture/test_error_catalogue.py`` checks that the three sides agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

# -- raised by the core ----------------------------------------------------------------------------

ERROR: Final = "error"
"""The base of the core's errors; no error is raised with it."""
NOT_FOUND: Final = "not_found"
RUN_NOT_FOUND: Final = "run_not_found"
WORKFLOW_NOT_FOUND: Final = "workflow_not_found"
SCHEDULE_NOT_FOUND: Final = "schedule_not_found"
ENDPOINT_NOT_FOUND: Final = "endpoint_not_found"
VERSION_SERVED_ELSEWHERE: Final = "version_served_elsewhere"
"""A version is served by pull workers or by push endpoints in a namespace, not both."""
SECRET_KEY_REQUIRED: Final = "secret_key_required"
"""The server has no secret key, which push endpoints need to keep their signing secrets."""
VALIDATION_ERROR: Final = "validation_error"
REFERENCE_CONFLICT: Final = "reference_conflict"
STALE_REVISION: Final = "stale_revision"
INVALID_TRANSITION: Final = "invalid_transition"
ACTION_NOT_ALLOWED: Final = "action_not_allowed"
TASK_CONFLICT: Final = "task_conflict"
UNAUTHORIZED: Final = "unauthorized"
FORBIDDEN: Final = "forbidden"
EMAIL_UNVERIFIED: Final = "email_unverified"
LINK_INVALID: Final = "link_invalid"
RATE_LIMITED: Final = "rate_limited"
ALREADY_EXISTS: Final = "already_exists"
INVITATION_INVALID: Final = "invitation_invalid"
OIDC_ERROR: Final = "oidc_error"
"""The base of OpenID Connect refusals; each is raised with one of ``OIDC_CODES`` instead."""

# OpenID Connect login refusals, with the status each is answered with: our settings are broken
# (500), the provider cannot be reached or talked to (502), this browser has no such login (400),
# the provider's answer does not authenticate (401), the identity is authentic but not allowed here
# (403).
OIDC_STATUS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "oidc_config_invalid": 500,  # a setting is missing or malformed; ``field`` names it
        "oidc_not_configured": 404,  # this server has no OpenID provider configured
        "oidc_discovery_failed": 502,  # the provider's metadata or keys could not be fetched or read
        "oidc_token_exchange_failed": 502,  # the token endpoint refused the code or could not be reached
        "oidc_state_mismatch": 400,  # the callback's state is not this session's pending login
        "oidc_expired_login": 400,  # the pending login is older than its time to live
        "oidc_provider_error": 401,  # the provider redirected back with an error (e.g. access_denied)
        "oidc_wrong_issuer": 401,  # metadata or ID token names another issuer than the pinned one
        "oidc_invalid_token": 401,  # the ID token is malformed, badly signed or lacks a required claim
        "oidc_wrong_audience": 401,  # the ID token was issued for another client
        "oidc_nonce_mismatch": 401,  # the ID token answers another authorization request
        "oidc_token_expired": 401,  # the ID token's exp has passed (beyond the clock leeway)
        "oidc_email_domain_not_allowed": 403,  # the email's domain is not in the allowed list
        "oidc_email_unverified": 403,  # a verified email is required (domain rule) but not asserted
        "oidc_account_unverified": 403,  # the email belongs to a password account whose owner never verified it
    }
)
OIDC_CODES: Final = frozenset(OIDC_STATUS)

# -- answered by the HTTP layer on its own ---------------------------------------------------------

MALFORMED_JSON: Final = "malformed_json"
BAD_REQUEST: Final = "bad_request"
PAYLOAD_TOO_LARGE: Final = "payload_too_large"
UNSUPPORTED_MEDIA_TYPE: Final = "unsupported_media_type"
METHOD_NOT_ALLOWED: Final = "method_not_allowed"
CONFLICT: Final = "conflict"
"""An integrity violation nothing handled: the request raced another one (``aiki.platform.db.integrity``)."""
UNAVAILABLE: Final = "unavailable"
INTERNAL_ERROR: Final = "internal_error"

# -- raised by the SDK itself, never on the wire ---------------------------------------------------

AIKI_ERROR: Final = "aiki_error"
TASK_FAILED: Final = "task_failed"
NON_DETERMINISM: Final = "non_determinism"
RUN_FAILED: Final = "run_failed"
RUN_CANCELLED: Final = "run_cancelled"
UNEXPECTED_STATUS: Final = "unexpected_status"
WAIT_TIMEOUT: Final = "wait_timeout"
SERVER_UNAVAILABLE: Final = "server_unavailable"
UNEXPECTED_RESPONSE: Final = "unexpected_response"

SDK_CODES: Final = frozenset(
    {
        AIKI_ERROR,
        TASK_FAILED,
        NON_DETERMINISM,
        RUN_FAILED,
        RUN_CANCELLED,
        UNEXPECTED_STATUS,
        WAIT_TIMEOUT,
        SERVER_UNAVAILABLE,
        UNEXPECTED_RESPONSE,
    }
)

# -- the HTTP status of every code a server answers with -------------------------------------------

HTTP_STATUS: Final[Mapping[str, int]] = MappingProxyType(
    {
        NOT_FOUND: 404,
        RUN_NOT_FOUND: 404,
        WORKFLOW_NOT_FOUND: 404,
        SCHEDULE_NOT_FOUND: 404,
        ENDPOINT_NOT_FOUND: 404,
        VALIDATION_ERROR: 422,
        MALFORMED_JSON: 400,
        BAD_REQUEST: 400,
        INVALID_TRANSITION: 400,
        ACTION_NOT_ALLOWED: 400,
        REFERENCE_CONFLICT: 409,
        STALE_REVISION: 409,
        TASK_CONFLICT: 409,
        VERSION_SERVED_ELSEWHERE: 409,
        SECRET_KEY_REQUIRED: 409,
        PAYLOAD_TOO_LARGE: 413,
        UNSUPPORTED_MEDIA_TYPE: 415,
        METHOD_NOT_ALLOWED: 405,
        UNAUTHORIZED: 401,
        FORBIDDEN: 403,
        EMAIL_UNVERIFIED: 403,
        RATE_LIMITED: 429,
        ALREADY_EXISTS: 409,
        CONFLICT: 409,
        INVITATION_INVALID: 400,
        LINK_INVALID: 400,
        **OIDC_STATUS,
        UNAVAILABLE: 503,
        INTERNAL_ERROR: 500,
    }
)
