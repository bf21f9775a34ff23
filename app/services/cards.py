"""Model cards: what a version is for, what it was made from, how well it does, at what
privacy cost, and where it falls short (Mitchell et al., "Model Cards for Model
Reporting", 2019), gathered from the registry's own records.

``model_card`` builds the card as data; the ``card.md`` template renders it as Markdown
(the API), which the console shows as HTML. A hospital reader (production version only)
sees every input's samples and label histogram, but no hospital's name and no other
hospital's vector id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import (
    BaseModelRecord,
    DataVector,
    Hospital,
    MergeJob,
    ModelVersion,
)
from app.security import Actor
from app.services import evaluations, privacy, versions
from app.services.privacy import Ledger

MIN_RELIABLE_IMAGES = 500
"""Under this many test images, the card warns that the intervals are wide."""
LOW_SENSITIVITY = 0.5


@dataclass(frozen=True)
class CardInput:
    hospital: str
    vector_id: str | None
    samples: int
    weight: float
    label_histogram: dict[str, int]
    privacy: str
    private: bool


@dataclass(frozen=True)
class CardEvaluation:
    benchmark: str
    split: str
    metrics: dict[str, Any]


@dataclass(frozen=True)
class CardLedger:
    hospital: str
    ledger: Ledger


@dataclass(frozen=True)
class ModelCard:
    version: ModelVersion
    base: BaseModelRecord
    base_chain: list[BaseModelRecord]
    intended_use: list[str]
    inputs: list[CardInput]
    merge_job_id: str | None
    evaluations: list[CardEvaluation]
    ledgers: list[CardLedger]
    next_generation: BaseModelRecord | None
    limitations: list[str] = field(default_factory=list)

    @property
    def total_samples(self) -> int:
        return sum(i.samples for i in self.inputs)


def _base_chain(session: Session, base: BaseModelRecord) -> list[BaseModelRecord]:
    chain = [base]
    while chain[-1].parent_id is not None and len(chain) < 100:
        parent = session.get(BaseModelRecord, chain[-1].parent_id)
        if parent is None:
            break
        chain.append(parent)
    return chain


def _hospital_label(actor: Actor, hospital_id: str, name: str, labels: dict[str, str]) -> str:
    """Admins read names; a hospital reads none, not even its own ("your hospital")."""
    if actor.is_admin:
        return name
    if hospital_id == actor.hospital_id:
        return "your hospital"
    others = sum(1 for label in labels.values() if label.startswith("hospital "))
    return f"hospital {others + 1}"


def _inputs(
    session: Session, actor: Actor, version: ModelVersion
) -> tuple[list[CardInput], dict[str, str]]:
    """The card's inputs, and hospital id -> the label the reader sees for it."""
    ids = [i.vector_id for i in version.inputs]
    rows = session.execute(
        select(DataVector, Hospital.name)
        .join(Hospital, Hospital.id == DataVector.hospital_id)
        .where(DataVector.id.in_(ids))
        .order_by(Hospital.name, DataVector.id)
    ).all()
    weights = {i.vector_id: i.weight for i in version.inputs}
    labels: dict[str, str] = {}
    for vector, name in rows:
        if vector.hospital_id not in labels:
            labels[vector.hospital_id] = _hospital_label(actor, vector.hospital_id, name, labels)
    described = {vector.id: privacy.describe(vector.meta) for vector, _ in rows}
    inputs = [
        CardInput(
            hospital=labels[vector.hospital_id],
            vector_id=vector.id
            if actor.is_admin or vector.hospital_id == actor.hospital_id
            else None,
            samples=vector.num_samples,
            weight=weights[vector.id],
            label_histogram=dict((vector.meta or {}).get("label_histogram") or {}),
            privacy=described[vector.id].line,
            private=described[vector.id].guarantee,
        )
        for vector, _ in rows
    ]
    return inputs, labels


def _intended_use(base: BaseModelRecord, evals: list[CardEvaluation]) -> list[str]:
    spec = base.spec or {}
    task = ", ".join(sorted({e.benchmark for e in evals})) or "its registered benchmark's task"
    return [
        f"Classifies {spec.get('image_size', '?')}x{spec.get('image_size', '?')} images with "
        f"{spec.get('in_channels', '?')} channel(s) into {spec.get('num_classes', '?')} classes "
        f"({spec.get('arch', base.arch)}), the task of {task}.",
        "Decision support for research and evaluation by the participating hospitals; "
        "not a medical device, and not for diagnosis without a clinician's review.",
        "Inputs must be preprocessed as the base expects (size, channels, intensity range).",
    ]


def _limitations(
    version: ModelVersion, evals: list[CardEvaluation], inputs: list[CardInput]
) -> list[str]:
    notes = [
        "Evaluated only on the registry's held-out benchmark; performance on another "
        "population, scanner or protocol is unknown until measured there.",
    ]
    if not evals:
        notes.append("No completed evaluation: its performance is unmeasured.")
    for e in evals:
        n = int(e.metrics.get("n") or 0)
        if n and n < MIN_RELIABLE_IMAGES:
            notes.append(f"{e.benchmark}/{e.split} has only {n} images: the intervals are wide.")
        for c, value in enumerate(e.metrics.get("sensitivity") or []):
            if value is None:
                notes.append(f"Class {c} is absent from {e.benchmark}/{e.split}: unmeasured.")
            elif value < LOW_SENSITIVITY:
                notes.append(
                    f"Class {c} sensitivity is {value:.2f} on {e.benchmark}/{e.split}: "
                    "most of its cases are missed."
                )
    if version.calibration is None:
        notes.append("BatchNorm statistics were not recomputed after the merge.")
    if not all(i.private for i in inputs):
        notes.append(
            "Some inputs carry no differential-privacy guarantee: the weights may reveal "
            "facts about those hospitals' training images."
        )
    if len({i.hospital for i in inputs}) < 2:
        notes.append("Built from a single hospital's data.")
    return notes


def model_card(session: Session, actor: Actor, version_id: str) -> ModelCard:
    """The card of ``version_id`` (or ``production``) as ``actor`` may read it."""
    version = versions.get_version(session, actor, version_id)
    base = session.get(BaseModelRecord, version.base_id)
    assert base is not None
    inputs, labels = _inputs(session, actor, version)
    evals = [
        CardEvaluation(e.benchmark_name or e.benchmark_id, e.split, e.metrics)
        for e in evaluations.version_evaluations(session, actor, version.id)
        if e.status == "completed"
    ]
    job = session.scalar(select(MergeJob.id).where(MergeJob.version_id == version.id).limit(1))
    following = session.scalar(
        select(BaseModelRecord).where(BaseModelRecord.source_version_id == version.id)
    )
    ledgers = [
        CardLedger(label, privacy.ledger(session, hospital_id))
        for hospital_id, label in labels.items()
    ]
    return ModelCard(
        version=version,
        base=base,
        base_chain=_base_chain(session, base),
        intended_use=_intended_use(base, evals),
        inputs=inputs,
        merge_job_id=job if actor.is_admin else None,
        evaluations=evals,
        ledgers=ledgers,
        next_generation=following,
        limitations=_limitations(version, evals, inputs),
    )
