"""The promotion gate on stored evaluations: which benchmark split both versions share,
and whether the candidate passes there (``medvec.gates``).

The gate reads completed evaluations only. It prefers the ``val`` split (promotion is a
choice, and choices are made on validation) and falls back to ``test`` for a benchmark
registered without one. Candidate and production must have been evaluated on the same
benchmark split; without a production version only the sensitivity floor applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.models import Evaluation, EvaluationStatus, ModelVersion
from medvec.gates import GateCheck, GatePolicy, gate_checks

#: splits the gate compares on, in order of preference
GATE_SPLITS = ("val", "test")


def policy_of(settings: Settings) -> GatePolicy:
    return GatePolicy(
        metrics=tuple(settings.gate_metrics),
        tolerance=settings.gate_tolerance,
        class_metrics=tuple(settings.gate_class_metrics),
        class_tolerance=settings.gate_class_tolerance,
        sensitivity_floor=settings.gate_sensitivity_floor,
        noise_z=settings.gate_noise_z,
    )


@dataclass(frozen=True)
class GateOutcome:
    """The gate's verdict for one candidate on one benchmark split."""

    benchmark_id: str
    split: str
    production_id: str | None
    checks: list[GateCheck]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failed(self) -> list[GateCheck]:
        return [check for check in self.checks if not check.passed]

    def detail(self) -> dict[str, Any]:
        """The structured ``detail`` of a refusal (and of the audit record)."""
        return {
            "benchmark_id": self.benchmark_id,
            "split": self.split,
            "production_id": self.production_id,
            "passed": self.passed,
            "checks": [check.model_dump() for check in self.checks],
        }


def completed_metrics(session: Session, version_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``(benchmark_id, split) -> metrics`` of the version's completed evaluations."""
    query = select(Evaluation).where(
        Evaluation.version_id == version_id, Evaluation.status == EvaluationStatus.COMPLETED
    )
    return {(row.benchmark_id, row.split): dict(row.metrics) for row in session.scalars(query)}


def _common_split(
    mine: dict[tuple[str, str], dict[str, Any]], theirs: dict[tuple[str, str], dict[str, Any]]
) -> tuple[str, str] | None:
    for split in GATE_SPLITS:
        shared = sorted(key for key in mine if key[1] == split and key in theirs)
        if shared:
            return shared[0]
    return None


def evaluate_gate(
    session: Session,
    candidate: ModelVersion,
    production: ModelVersion | None,
    policy: GatePolicy,
) -> GateOutcome | None:
    """The gate's outcome, or ``None`` when no benchmark split has both versions' completed
    evaluations (or, without production, none has the candidate's)."""
    mine = completed_metrics(session, candidate.id)
    theirs = completed_metrics(session, production.id) if production is not None else mine
    key = _common_split(mine, theirs)
    if key is None:
        return None
    reference = theirs[key] if production is not None else None
    checks = gate_checks(mine[key], reference, policy)
    return GateOutcome(key[0], key[1], production.id if production else None, checks)


def describe_failures(outcome: GateOutcome) -> str:
    """One line per failed check, for the refusal's message."""
    parts = []
    for check in outcome.failed:
        name = check.metric if check.class_index is None else f"{check.metric}[{check.class_index}]"
        if check.kind == "floor":
            parts.append(f"{name} {check.candidate:.4f} < floor {check.threshold:.4f}")
        else:
            noise = f", noise {check.noise:.4f}" if check.noise else ""
            parts.append(
                f"{name} {check.candidate:.4f} < {check.threshold:.4f} "
                f"(production {check.production:.4f}{noise})"
            )
    return "; ".join(parts)
