"""Bearer-token authentication for the router, compared in constant time.

* no ``Authorization: Bearer ...`` header → 401 with ``WWW-Authenticate: Bearer``;
* a token that matches none configured → 403;
* no token configured at all → 503 saying how to configure one, unless
  ``allow_unauthenticated`` is set (local demos), in which case the actor is ``anonymous``.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .settings import ApiSettings

SCHEME_NAME = "bearerAuth"
ANONYMOUS = "anonymous"

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name=SCHEME_NAME,
    description="`Authorization: Bearer <token>`; the token is TRACKER_API_TOKEN "
    "(or one of TRACKER_API_TOKENS).",
)


class Authenticator:
    """A FastAPI dependency returning the actor (the token's name) of an authorised request."""

    def __init__(self, settings: ApiSettings) -> None:
        self._tokens = [
            (name, token.encode()) for name, token in settings.configured_tokens().items()
        ]
        self._open = settings.allow_unauthenticated

    def __call__(
        self,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> str:
        if not self._tokens:
            if self._open:
                return ANONYMOUS
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "The tracker API has no token configured: set TRACKER_API_TOKEN "
                "(or ApiSettings(allow_unauthenticated=True) for a local demo)",
            )
        if credentials is None or not credentials.credentials:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "Missing bearer token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        given = credentials.credentials.encode()
        actor: str | None = None
        for name, token in self._tokens:  # compare with every token: no early exit
            if hmac.compare_digest(given, token) and actor is None:
                actor = name
        if actor is None:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                "The bearer token is not valid",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return actor
