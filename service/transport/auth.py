"""API-key access control as router dependencies, so a route is open only where it is mounted open.

With ``MADE_API_KEY`` set, protected routes need ``Authorization: Bearer <key>``; admin routes
always need it and are refused (403) when no key is configured.
"""

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from service.transport.errors import Forbidden, Unauthorized

# auto_error=False: a missing or malformed header reaches our check, which answers 401 in the
# service's error format; the scheme still documents the header in OpenAPI.
bearer = HTTPBearer(auto_error=False, description="MADE_API_KEY, when the service sets one.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def configured_key(request: Request) -> str | None:
    """The API key in force; an empty MADE_API_KEY counts as unset."""
    return request.app.state.serving.settings.api_key or None


def key_matches(credentials: HTTPAuthorizationCredentials | None, key: str) -> bool:
    """Constant-time comparison, so response timing does not reveal how much of a guess matched."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.credentials.encode(), key.encode())


def header_matches(authorization: str | None, key: str) -> bool:
    """``key_matches`` on a raw Authorization header, parsed as the HTTPBearer scheme parses it."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    return key_matches(HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials), key)


async def require_api_key(request: Request, credentials: Credentials) -> None:
    key = configured_key(request)
    if key is not None and not key_matches(credentials, key):
        raise Unauthorized("missing or invalid API key: send 'Authorization: Bearer <key>'")


async def require_admin_key(request: Request, credentials: Credentials) -> None:
    key = configured_key(request)
    if key is None:
        raise Forbidden("admin routes are disabled: the service has no MADE_API_KEY")
    if not key_matches(credentials, key):
        raise Unauthorized("missing or invalid API key: send 'Authorization: Bearer <key>'")
