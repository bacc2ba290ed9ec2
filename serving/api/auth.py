"""Admin authorisation for endpoints that change server state (index rebuilds)."""
from __future__ import annotations

import hmac

from serving.config import ServerConfig
from serving.api.errors import Forbidden, Unauthorized


def require_admin(config: ServerConfig, authorization: str | None) -> None:
    """Accept `Authorization: Bearer <R2T2_ADMIN_TOKEN>`; refuse everything when no token is configured."""
    if config.admin_token is None:
        raise Forbidden("admin endpoints are disabled: set R2T2_ADMIN_TOKEN on the server")
    scheme, _, token = (authorization or "").partition(" ")
    expected = config.admin_token.get_secret_value()
    # Constant-time comparison: the time taken must not reveal how much of the token matched.
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized("missing or wrong admin token (Authorization: Bearer <token>)")
