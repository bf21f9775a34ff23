"""Hospitals, tokens and identity."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.models.hospital import Role
from app.schemas.common import Id, ReadModel, RequestModel


class HospitalCreate(RequestModel):
    name: str = Field(min_length=1, max_length=200)


class HospitalRead(ReadModel):
    id: str
    name: str
    created_at: datetime
    removed_at: datetime | None = Field(
        default=None, description="when an admin removed it (its vectors are no longer merged)"
    )


class TokenCreate(RequestModel):
    name: str = Field(min_length=1, max_length=200)
    role: Role
    hospital_id: Id | None = Field(
        default=None, description="the hospital of a hospital token; admin: none"
    )


class TokenRead(ReadModel):
    id: str
    name: str
    role: Role
    hospital_id: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenRead):
    token: str = Field(description="the secret; shown once, never stored")


class WhoAmI(BaseModel):
    role: Role
    hospital_id: str | None
    hospital_name: str | None
    token_name: str | None
