"""The registry's bearer-token format, shared by the registry and the tools that start one
(the demo's embedded registry, the tests' servers): ``mv_`` + 43 url-safe characters."""

from __future__ import annotations

import secrets

__all__ = ["TOKEN_PREFIX", "mint_token"]

TOKEN_PREFIX = "mv_"


def mint_token() -> str:
    """A new bearer token: ``mv_`` + 43 url-safe characters (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)
