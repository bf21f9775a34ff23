"""API tokens: minted once, shown once, stored as sha256; roles are admin or hospital."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from app.models.hospital import Role


def hash_token(token: str) -> str:
    """The stored form of a token. Tokens carry 256 random bits, so a plain sha256 is
    enough: there is nothing to brute-force the way there is with passwords."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_bearer(header: str | None) -> str | None:
    """The token from an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


@dataclass(frozen=True)
class Actor:
    """Who is acting: a token's identity plus the client address, for checks and the audit.

    ``system`` actors (start-up, workers, the ``medvec-server`` command) have no token.
    """

    name: str
    role: Role
    token_id: str | None = None
    token_name: str | None = None
    hospital_id: str | None = None
    hospital_name: str | None = None
    ip: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @classmethod
    def system(cls, name: str) -> Actor:
        return cls(name=f"system:{name}", role=Role.ADMIN)
