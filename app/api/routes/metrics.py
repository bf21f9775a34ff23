"""``GET /metrics``: Prometheus' text format for the scraper (see ``app.metrics``).

Open by default, like the health probes, for a scraper on the operators' network; with
``MEDVEC_METRICS_TOKEN`` set it needs ``Authorization: Bearer <token>`` (a separate
secret from the API's tokens, so a scraper's credential grants nothing else).
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import SettingsDep
from app.errors import ErrorBody, Unauthenticated
from app.metrics import exposition
from app.security import parse_bearer

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        401: {"model": ErrorBody},
    },
)
async def metrics(request: Request, settings: SettingsDep) -> Response:
    """Counters and histograms of every process of this machine, and gauges read from the
    database: uploads, rejections, merge and evaluation durations, job failures and
    retries, queue depth, vectors per state, the production version's accuracy."""
    if settings.metrics_token is not None:
        given = parse_bearer(request.headers.get("authorization")) or ""
        wanted = settings.metrics_token.get_secret_value()
        if not secrets.compare_digest(given.encode(), wanted.encode()):
            raise Unauthenticated(
                "GET /metrics needs the metrics token",
                hint="send Authorization: Bearer $MEDVEC_METRICS_TOKEN",
            )
    body, content_type = await run_in_threadpool(exposition, request.app.state.sessionmaker)
    return Response(body, media_type=content_type)
