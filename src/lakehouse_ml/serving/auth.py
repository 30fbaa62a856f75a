"""The bearer-token check, declared once: ``require_token`` guards the scoring and admin routers,
``caller_authorized`` lets ``/version`` answer callers without credentials with less."""

from __future__ import annotations

import hmac

from fastapi import Request

from lakehouse_ml.serving.dependencies import Settings
from lakehouse_ml.serving.request_validation import ApiProblem, problem


async def require_token(request: Request, settings: Settings) -> None:
    """Nothing when no token is configured or the request carries ``Authorization: Bearer <token>``;
    else 401 with ``WWW-Authenticate: Bearer``."""
    if settings.token is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # compare_digest: the time taken tells nothing about how much of the token was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.token.encode()):
        got = "missing" if not scheme else "an invalid token"
        raise ApiProblem(
            401,
            [problem("Authorization", "auth", "header 'Authorization: Bearer <token>'", got)],
            {"WWW-Authenticate": "Bearer"},
        )


async def caller_authorized(request: Request, settings: Settings) -> bool:
    """False for a request without credentials while a token is configured; True for the right ones.
    Credentials that are wrong get 401, as everywhere."""
    if "authorization" not in request.headers and settings.token is not None:
        return False
    await require_token(request, settings)
    return True
