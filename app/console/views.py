"""What each console page shows, gathered from the services (no rules of its own).

Each function takes the request's session and actor and returns the template's context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.console import charts, panels
from app.errors import Forbidden
from app.models import (
    AuditEvent,
    BaseModelRecord,
    Benchmark,
    DataVector,
    Evaluation,
    EvaluationStatus,
    Hospital,
    ModelVersion,
)
from app.security import Actor
from app.services import audit, bases, cards, hospitals, merges, privacy, versions
from app.services.privacy import Ledger
from app.templating import markdown_html, render

#: the metrics of the versions table; every one sorts it (``ece``: lower is better)
VERSION_METRICS = ("accuracy", "balanced_accuracy", "auc_macro", "f1_macro", "ece")
VERSION_COLUMNS = ("created_at", "status", "strategy", "generation", "inputs", *VERSION_METRICS)
LINEAGE_VERSIONS = 8
RECENT_EVENTS = 12


@dataclass(frozen=True)
class VersionRow:
    version: ModelVersion
    generation: int
    inputs: int
    metrics: dict[str, Any]
    benchmark: str | None

    def value(self, column: str) -> Any:
        if column in VERSION_METRICS:
            return self.metrics.get(column)
        if column == "inputs":
            return self.inputs
        if column == "generation":
            return self.generation
        if column == "status":
            return self.version.status.value
        return getattr(self.version, column)


def require_admin_viewer(actor: Actor) -> None:
    if not actor.is_admin:
        raise Forbidden("this page is for admins", hint="a hospital sees its own page only")


def _test_metrics(
    session: Session, version_ids: list[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per version, the first completed test-split evaluation (by benchmark name)."""
    query = (
        select(Evaluation.version_id, Benchmark.name, Evaluation.metrics)
        .join(Benchmark, Benchmark.id == Evaluation.benchmark_id)
        .where(
            Evaluation.version_id.in_(version_ids),
            Evaluation.status == EvaluationStatus.COMPLETED,
            Evaluation.split == "test",
        )
        .order_by(Benchmark.name)
    )
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for version_id, name, metrics in session.execute(query):
        found.setdefault(version_id, (name, dict(metrics or {})))
    return found


def version_rows(session: Session) -> list[VersionRow]:
    all_versions = versions.list_versions(session)
    query = select(BaseModelRecord.id, BaseModelRecord.generation)
    generations = dict(session.execute(query).all())
    metrics = _test_metrics(session, [v.id for v in all_versions])
    return [
        VersionRow(
            v,
            generations.get(v.base_id, 0),
            len(v.inputs),
            metrics.get(v.id, ("", {}))[1],
            metrics.get(v.id, (None, {}))[0],
        )
        for v in all_versions
    ]


def sort_rows(rows: list[VersionRow], column: str, descending: bool) -> list[VersionRow]:
    """Sorted by ``column``; rows without a value go last whatever the direction."""
    if column not in VERSION_COLUMNS:
        column = "created_at"
    present = [r for r in rows if r.value(column) is not None]
    missing = [r for r in rows if r.value(column) is None]
    return sorted(present, key=lambda r: r.value(column), reverse=descending) + missing


def _lineage(session: Session, rows: list[VersionRow]) -> charts.Graph | None:
    recent = rows[:LINEAGE_VERSIONS]
    vector_ids = sorted({i.vector_id for r in recent for i in r.version.inputs})
    vectors = list(
        session.execute(
            select(DataVector.id, DataVector.base_id, Hospital.name)
            .join(Hospital, Hospital.id == DataVector.hospital_id)
            .where(DataVector.id.in_(vector_ids))
            .order_by(Hospital.name, DataVector.id)
        )
    )
    base_ids = {r.version.base_id for r in recent} | {v.base_id for v in vectors}
    base_rows = list(
        session.scalars(
            select(BaseModelRecord)
            .where(BaseModelRecord.id.in_(base_ids))
            .order_by(BaseModelRecord.generation)
        )
    )
    followers = list(
        session.scalars(
            select(BaseModelRecord).where(
                BaseModelRecord.source_version_id.in_([r.version.id for r in recent])
            )
        )
    )
    return charts.lineage_graph(
        [(b.id, f"{b.name} (g{b.generation})") for b in base_rows],
        [(v.id, f"{v.name} {v.id[:6]}", v.base_id) for v in vectors],
        [
            (
                r.version.id,
                f"{r.version.id[:8]} {r.version.status.value}",
                r.version.base_id,
                [i.vector_id for i in r.version.inputs],
            )
            for r in reversed(recent)
        ],  # fmt: skip
        [(b.id, f"g{b.generation} {b.name}", b.source_version_id or "") for b in followers],
    )


def versions_page(session: Session, sort: str, descending: bool) -> dict[str, Any]:
    rows = version_rows(session)
    chronological = list(reversed(rows))
    chart = charts.accuracy_chart(
        [
            (r.version.id[:6], r.generation, float(r.metrics["accuracy"]))
            for r in chronological
            if r.metrics.get("accuracy") is not None
        ]
    )
    return {
        "rows": sort_rows(rows, sort, descending),
        "columns": VERSION_COLUMNS,
        "metrics": VERSION_METRICS,
        "sort": sort,
        "descending": descending,
        "chart": chart,
        "lineage_graph": _lineage(session, rows),
    }


def _last_pushes(session: Session) -> dict[str, Any]:
    query = select(DataVector.hospital_id, func.max(DataVector.created_at)).group_by(
        DataVector.hospital_id
    )
    return dict(session.execute(query).all())


def _vector_counts(session: Session) -> dict[str, int]:
    query = select(DataVector.hospital_id, func.count()).group_by(DataVector.hospital_id)
    return dict(session.execute(query).all())


def overview_page(session: Session) -> dict[str, Any]:
    production = versions.production_version(session)
    metrics = _test_metrics(session, [production.id]) if production else {}
    current = next(iter(bases.list_bases(session)), None)
    pushes = _last_pushes(session)
    return {
        "production": production,
        "production_metrics": metrics.get(production.id) if production else None,
        "base": current,
        "hospitals": [(h, pushes.get(h.id)) for h in hospitals.list_hospitals(session)],
        "events": audit.list_events(session, limit=RECENT_EVENTS),
    }


def version_page(session: Session, actor: Actor, version_id: str) -> dict[str, Any]:
    card = cards.model_card(session, actor, version_id)
    evaluations = [
        {
            "evaluation": e,
            "calibration": charts.calibration_chart(e.metrics.get("calibration") or []),
            "matrix_max": max(
                (max(row) for row in e.metrics.get("confusion_matrix") or [[0]]), default=0
            ),
        }
        for e in card.evaluations
    ]
    return {
        "card": card,
        "card_html": markdown_html(render("card.md", card=card)),
        "version": card.version,
        "evaluations": evaluations,
        "panels": panels.version_panels(session, actor, card.version),
    }


def hospitals_page(session: Session) -> dict[str, Any]:
    pushes, counts = _last_pushes(session), _vector_counts(session)
    every = hospitals.list_hospitals(session)
    rows = [
        {
            "hospital": h,
            "last_push": pushes.get(h.id),
            "vectors": counts.get(h.id, 0),
            "ledger": privacy.ledger(session, h.id),
        }
        for h in every
    ]
    return {
        "rows": rows,
        "tokens": hospitals.list_tokens(session),
        "names": {h.id: h.name for h in every},
        "panels": panels.hospitals_panels(session),
    }


def hospital_page(session: Session, actor: Actor, hospital_id: str) -> dict[str, Any]:
    """One hospital's page: an admin reads any, a hospital its own only."""
    if not actor.is_admin and actor.hospital_id != hospital_id:
        raise Forbidden("a hospital sees its own page only", hint="sign in as an admin")
    hospital = hospitals.get_hospital(session, hospital_id)
    vectors = list(
        session.scalars(
            select(DataVector)
            .where(DataVector.hospital_id == hospital_id)
            .order_by(DataVector.created_at.desc())
        )
    )
    ledger: Ledger = privacy.ledger(session, hospital_id)
    tokens = [t for t in hospitals.list_tokens(session) if t.hospital_id == hospital_id]
    return {
        "hospital": hospital,
        "vectors": vectors,
        "privacy_lines": {v.id: privacy.describe(v.meta).line for v in vectors},
        "ledger": ledger,
        "tokens": tokens if actor.is_admin else [],
        "panels": panels.hospital_panels(session, actor, hospital),
    }


def jobs_page(session: Session, action: str | None, target_id: str | None) -> dict[str, Any]:
    evaluations = session.execute(
        select(Evaluation, Benchmark.name)
        .join(Benchmark, Benchmark.id == Evaluation.benchmark_id)
        .order_by(Evaluation.created_at.desc())
        .limit(100)
    ).all()
    actions = sorted(set(session.scalars(select(AuditEvent.action).distinct())))
    return {
        "merges": merges.list_jobs(session)[:100],
        "evaluations": evaluations,
        "events": audit.list_events(session, action=action, target_id=target_id, limit=200),
        "actions": actions,
        "action": action or "",
        "target_id": target_id or "",
    }
