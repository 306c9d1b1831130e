"""Identity and access: organizations, users, namespaces, roles, API keys, sessions, OIDC, audit."""
