"""SQL of IAM, by concern. Namespace-scoped repositories fix their namespace when built."""

from __future__ import annotations

from aiki.iam.repos.api_keys import ApiKeyDirectory, ApiKeyRepository
from aiki.iam.repos.limits import AuditRepository, RateLimitRepository
from aiki.iam.repos.people import (
    EmailTokenRepository,
    IdentityRepository,
    OidcLoginRepository,
    SessionRepository,
    UserRepository,
)
from aiki.iam.repos.rows import Row
from aiki.iam.repos.tenancy import (
    InvitationRepository,
    NamespaceDirectory,
    NamespaceMemberRepository,
    OrganizationRepository,
)

__all__ = [
    "ApiKeyDirectory",
    "ApiKeyRepository",
    "AuditRepository",
    "EmailTokenRepository",
    "IdentityRepository",
    "InvitationRepository",
    "NamespaceDirectory",
    "NamespaceMemberRepository",
    "OidcLoginRepository",
    "OrganizationRepository",
    "RateLimitRepository",
    "Row",
    "SessionRepository",
    "UserRepository",
]
