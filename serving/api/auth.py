"""Authorisation for endpoints that change server state: the admin token (index rebuilds, removals) and the
feedback tokens (verified answers)."""
from __future__ import annotations

import hmac

from serving.config import ServerConfig
from serving.api.errors import Forbidden, Unauthorized


def _matches(authorization: str | None, expected: str) -> bool:
    scheme, _, token = (authorization or "").partition(" ")
    # Constant-time comparison: the time taken must not reveal how much of the token matched.
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


def require_admin(config: ServerConfig, authorization: str | None) -> None:
    """Accept `Authorization: Bearer <R2T2_ADMIN_TOKEN>`; refuse everything when no token is configured."""
    if config.admin_token is None:
        raise Forbidden("admin endpoints are disabled: set R2T2_ADMIN_TOKEN on the server")
    if not _matches(authorization, config.admin_token.get_secret_value()):
        raise Unauthorized("missing or wrong admin token (Authorization: Bearer <token>)")


def feedback_source(config: ServerConfig, authorization: str | None) -> str:
    """The name verified answers sent with this token are kept under: "admin" for the admin token, else the feedback
    token's name. 403 when the server takes no verified answers, 401 for a missing or unknown token."""
    if not config.feedback_enabled:
        raise Forbidden("verified answers are off: start the server with R2T2_FEEDBACK_TOKEN (or R2T2_ADMIN_TOKEN) set")
    named = dict(config.feedback_tokens)
    if config.admin_token is not None:
        named["admin"] = config.admin_token
    found = [name for name, token in named.items() if _matches(authorization, token.get_secret_value())]
    if not found:
        raise Unauthorized("missing or wrong feedback token (Authorization: Bearer <R2T2_FEEDBACK_TOKEN or the admin "
                           "token>)")
    return found[0]
