"""Who the token is."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import Principal
from app.api.routes.common import errors
from app.schemas.hospitals import WhoAmI

router = APIRouter(tags=["auth"])


@router.get("/whoami", response_model=WhoAmI, responses=errors())
def whoami(actor: Principal) -> WhoAmI:
    """The role, hospital and token name behind the bearer token."""
    return WhoAmI(
        role=actor.role,
        hospital_id=actor.hospital_id,
        hospital_name=actor.hospital_name,
        token_name=actor.token_name,
    )
