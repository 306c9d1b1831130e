"""IAM API: sign-up, login/logout, organizations, members, invitations, namespaces, API keys, audit.

Mounted only when the server runs with IAM. Every handler declares its action (``policy(...)``);
the guard in ``aiki.api.auth`` has authorized the caller before the handler runs. The controllers
live in one module per concern; this one lists them.
"""

from __future__ import annotations

from aiki.api.auth_routes import AuthController
from aiki.api.namespace_routes import NamespaceController
from aiki.api.oidc_routes import OidcController
from aiki.api.org_routes import InvitationController, OrganizationController

IAM_CONTROLLERS = [AuthController, OidcController, OrganizationController, InvitationController, NamespaceController]
