"""The IAM API's prefix and the request bodies its routes take."""

from __future__ import annotations

import msgspec

API = "/api/v1"


class SignupRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    password: str
    name: str | None = None
    organization: str | None = None
    namespace: str | None = None


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    password: str


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    token: str


class ForgotPasswordRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str


class ResetPasswordRequest(msgspec.Struct, forbid_unknown_fields=True):
    token: str
    password: str


class NameRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class RoleRequest(msgspec.Struct, forbid_unknown_fields=True):
    role: str


class InvitationRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    role: str = "member"
    namespace_id: str | None = None
    namespace_role: str | None = None
    expires_in_s: int | None = None


class AcceptInvitationRequest(msgspec.Struct, forbid_unknown_fields=True):
    token: str


class CreateApiKeyRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    role: str
    expires_at: int | None = None
    """Expiry in milliseconds since the Unix epoch; ``None`` for a key that does not expire."""
