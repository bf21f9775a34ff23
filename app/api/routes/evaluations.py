"""Evaluations of a version (admin; hospitals for the production version) and the
leaderboard of versions by a metric (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import AdminPrincipal, Principal, SessionDep
from app.api.routes.common import PageLimit, errors
from app.errors import InvalidInput, NotFound
from app.schemas.evaluations import EvaluationRead, LeaderboardRow
from app.services import evaluations

router = APIRouter(tags=["evaluations"])


@router.get(
    "/versions/{version_id}/evaluations",
    response_model=list[EvaluationRead],
    responses=errors(NotFound),
)
def version_evaluations(
    version_id: str, session: SessionDep, actor: Principal
) -> list[EvaluationRead]:
    """Every evaluation of a version, per benchmark and split (``test``; ``val`` when lambda
    was tuned on it). Hospitals may read those of the production version only."""
    return evaluations.version_evaluations(session, actor, version_id)


@router.get(
    "/leaderboard", response_model=list[LeaderboardRow], responses=errors(InvalidInput, NotFound)
)
def leaderboard(
    session: SessionDep,
    _actor: AdminPrincipal,
    metric: Annotated[str, Query()] = "accuracy",
    benchmark_id: Annotated[str | None, Query()] = None,
    split: Annotated[str, Query()] = "test",
    limit: PageLimit = 100,
) -> list[LeaderboardRow]:
    """Versions ranked by ``metric`` on their completed evaluations, best first."""
    return evaluations.leaderboard(
        session, metric=metric, benchmark_id=benchmark_id, split=split, limit=limit
    )
