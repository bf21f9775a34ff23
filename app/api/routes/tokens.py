"""API tokens (admin): mint (shown once), list, revoke."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.api.deps import AdminPrincipal, SessionDep
from app.api.routes.common import errors
from app.errors import Conflict, InvalidInput, NotFound
from app.schemas.hospitals import TokenCreate, TokenCreated, TokenRead
from app.services import hospitals

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenCreated,
    responses=errors(Conflict, InvalidInput, NotFound),
)
def create_token(body: TokenCreate, session: SessionDep, actor: AdminPrincipal) -> TokenCreated:
    """Mint a token. The secret is in this answer only; the registry keeps its sha256.
    A removed hospital gets none (409)."""
    token, secret = hospitals.create_token(
        session, actor, name=body.name, role=body.role, hospital_id=body.hospital_id
    )
    return TokenCreated.model_validate(
        {**TokenRead.model_validate(token).model_dump(), "token": secret}
    )


@router.get("", response_model=list[TokenRead], responses=errors())
def list_tokens(session: SessionDep, _actor: AdminPrincipal) -> object:
    """Every token (never the secrets)."""
    return hospitals.list_tokens(session)


@router.delete("/{token_id}", response_model=TokenRead, responses=errors(NotFound))
def revoke_token(token_id: str, session: SessionDep, actor: AdminPrincipal) -> object:
    """Revoke a token; it is refused from the next request on."""
    return hospitals.revoke_token(session, actor, token_id)
