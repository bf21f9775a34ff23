"""Evaluations of a version (admin; hospitals for the production version), re-running
one (admin), and the leaderboard of versions by a metric (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.deps import AdminPrincipal, Principal, SessionDep
from app.api.routes.common import PageLimit, errors
from app.errors import InvalidInput, NotFound
from app.schemas.evaluations import EvaluationCreate, EvaluationRead, LeaderboardRow, RankMetric
from app.services import evaluation_runs, evaluations

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


@router.post(
    "/versions/{version_id}/evaluations",
    status_code=202,
    response_model=EvaluationRead,
    responses=errors(NotFound, InvalidInput),
)
def request_evaluation(
    version_id: str,
    body: EvaluationCreate,
    session: SessionDep,
    actor: AdminPrincipal,
    response: Response,
) -> EvaluationRead:
    """Run the version's evaluation on a benchmark split again (or for the first time).

    One already queued, or running under its worker's lease, is answered as it is;
    a completed or failed one is queued again with its attempts counted afresh (the
    audit log keeps the metrics it replaces).
    """
    row = evaluation_runs.request_evaluation(
        session, actor, version_id, body.benchmark_id, body.split
    )
    response.headers["Location"] = f"/api/v1/versions/{version_id}/evaluations"
    return evaluations.read_evaluation(session, row)


@router.get(
    "/leaderboard", response_model=list[LeaderboardRow], responses=errors(InvalidInput, NotFound)
)
def leaderboard(
    session: SessionDep,
    _actor: AdminPrincipal,
    metric: Annotated[RankMetric, Query()] = "accuracy",
    benchmark_id: Annotated[str | None, Query()] = None,
    split: Annotated[str, Query()] = "test",
    limit: PageLimit = 100,
) -> list[LeaderboardRow]:
    """Versions ranked by ``metric`` on their completed evaluations, best first."""
    return evaluations.leaderboard(
        session, metric=metric, benchmark_id=benchmark_id, split=split, limit=limit
    )
