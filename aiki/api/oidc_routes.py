"""IAM API, OpenID Connect: start a login at the provider, and finish it at the callback."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.datastructures import Cookie
from litestar.params import FromQuery, QueryParameter
from litestar.response import Redirect

from aiki.api.auth import SESSION_COOKIE, client_ip, policy
from aiki.api.auth_routes import session_cookie, user_agent
from aiki.api.deps import IamDep
from aiki.api.iam_requests import API
from aiki.api.openapi_docs import problems
from aiki.iam import oidc_login
from aiki.iam.context import Iam

OIDC_BROWSER_COOKIE = "aiki_oidc"
"""The pre-login token of a browser in the middle of an OIDC login (never a session)."""
_OIDC_PATH = f"{API}/auth/oidc"


def _oidc_cookie(iam: Iam, value: str, max_age: int) -> Cookie:
    # Lax: the provider's redirect back is a top-level GET, which carries it; other sites' requests do not.
    return Cookie(
        key=OIDC_BROWSER_COOKIE,
        value=value,
        path=_OIDC_PATH,
        httponly=True,
        secure=iam.config.secure_cookies,
        samesite="lax",
        max_age=max_age,
    )


class OidcController(Controller):
    path = _OIDC_PATH
    tags = ["auth"]

    @get(
        "/login",
        summary="Sign in through the configured OpenID provider (redirects there)",
        status_code=302,
        # Not configured (404), the provider unreachable (502); starts are rate limited per address.
        opt=policy("public") | problems(404, 429, 502),
    )
    async def oidc_login(
        self,
        request: Request[Any, Any, Any],
        iam: IamDep,
        return_to: Annotated[str | None, QueryParameter(description="a path on this server to show afterwards")] = None,
    ) -> Redirect:
        started = await oidc_login.begin(iam, return_to=return_to, ip=client_ip(request))
        rp = oidc_login.relying_party(iam)
        return Redirect(
            started.url,
            status_code=302,
            cookies=[_oidc_cookie(iam, started.browser_token, rp.pending_ttl_ms // 1000)],
        )

    @get(
        "/callback",
        summary="Where the OpenID provider sends the browser back (sets the session cookie)",
        status_code=303,
        # The provider's answer does not authenticate (401) or its identity is not allowed here (403).
        opt=policy("public") | problems(401, 403, 404, 502),
    )
    async def oidc_callback(
        self,
        request: Request[Any, Any, Any],
        iam: IamDep,
        # `state` is a reserved parameter name in Litestar (the app state): read it under another name.
        callback_state: Annotated[str | None, QueryParameter(name="state")] = None,
        code: FromQuery[str | None] = None,
        error: FromQuery[str | None] = None,
        error_description: FromQuery[str | None] = None,
        iss: FromQuery[str | None] = None,
    ) -> Redirect:
        given = {
            "state": callback_state,
            "code": code,
            "error": error,
            "error_description": error_description,
            "iss": iss,
        }
        previous = request.cookies.get(SESSION_COOKIE)
        done = await oidc_login.complete(
            iam,
            request.cookies.get(OIDC_BROWSER_COOKIE),
            {k: v for k, v in given.items() if v is not None},
            ip=client_ip(request),
            user_agent=user_agent(request),
            previous_session_id=iam.secrets.session_id(previous) if previous else None,
        )
        return Redirect(
            done.return_to or "/",
            status_code=303,
            cookies=[
                session_cookie(iam, done.session.cookie, iam.config.session_absolute_s),
                _oidc_cookie(iam, "", 0),
            ],
        )
