"""Extension points of the console: sections other features add to its pages.

A provider is a function of (session, actor, subject) that returns a ``Panel`` or None
(nothing to show, e.g. the feature has no data for the subject). Screening and
quarantine add a provider to ``HOSPITALS_PANELS`` / ``HOSPITAL_PANELS``, per-hospital
contributions one to ``VERSION_PANELS``; the templates render every panel the same way,
with its actions as forms that carry the console's CSRF token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import DataVector, Hospital, ModelVersion, VectorStatus
from app.security import Actor
from app.services import contributions, hospitals, quarantine
from app.services.errors import PreconditionFailed
from app.templating import number


@dataclass(frozen=True)
class PanelAction:
    """A button: POSTs ``fields`` (and the CSRF token) to ``url``, a console route.
    ``inputs`` are text boxes the admin fills in (name -> placeholder), all required."""

    label: str
    url: str
    fields: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Panel:
    """A titled table. ``key`` names the section (``panel-<key>``) and ``row_key`` the
    column whose value names each row (``<key>-<value>``), for links and tests."""

    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    note: str = ""
    actions: list[PanelAction] = field(default_factory=list)
    row_actions: Callable[[dict[str, Any]], list[PanelAction]] | None = None
    key: str = ""
    row_key: str = ""


VersionPanel = Callable[[Session, Actor, ModelVersion], Panel | None]
HospitalPanel = Callable[[Session, Actor, Hospital], Panel | None]
HospitalsPanel = Callable[[Session], Panel | None]

VERSION_PANELS: list[VersionPanel] = []
HOSPITAL_PANELS: list[HospitalPanel] = []
HOSPITALS_PANELS: list[HospitalsPanel] = []


def version_panels(session: Session, actor: Actor, version: ModelVersion) -> list[Panel]:
    return [p for p in (f(session, actor, version) for f in VERSION_PANELS) if p is not None]


def hospital_panels(session: Session, actor: Actor, hospital: Hospital) -> list[Panel]:
    return [p for p in (f(session, actor, hospital) for f in HOSPITAL_PANELS) if p is not None]


def hospitals_panels(session: Session) -> list[Panel]:
    return [p for p in (f(session) for f in HOSPITALS_PANELS) if p is not None]


def mergeability_panel(_session: Session, _actor: Actor, version: ModelVersion) -> Panel | None:
    """How well the version's inputs merged (stored by the merge), when it was measured."""
    record = version.mergeability
    if not record:
        return None
    labels = {
        "mean_cosine": "mean pairwise cosine of the inputs",
        "val_accuracy_combined": "validation accuracy as merged (averaged BatchNorm)",
        "val_accuracy_recalibrated": "validation accuracy after BatchNorm recalibration",
    }
    rows = [{"measure": text, "value": record.get(key)} for key, text in labels.items()]
    return Panel("Mergeability", ["measure", "value"], rows)


VERSION_PANELS.append(mergeability_panel)


SCREENING_COLUMNS = ["vector", "status", "norm", "peer median norm", "cosine to peers",
                     "val accuracy", "base val accuracy", "reason"]  # fmt: skip


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"


def screening_row(vector: DataVector) -> dict[str, Any]:
    """What screening measured for ``vector`` (``medvec.screening.ScreeningStats``)."""
    stats = vector.screening or {}
    val, base_val = stats.get("val") or {}, stats.get("base_val") or {}
    return {
        "id": vector.id,
        "vector": vector.id[:8],
        "status": vector.status.value,
        "norm": stats.get("norm", vector.norm),
        "peer median norm": stats.get("median_peer_norm"),
        "cosine to peers": stats.get("cosine_to_peers"),
        "val accuracy": val.get("accuracy"),
        "base val accuracy": base_val.get("accuracy"),
        "reason": vector.reason or stats.get("error") or "",
    }


def quarantine_actions(back: str) -> Callable[[dict[str, Any]], list[PanelAction]]:
    """Release and reject buttons of a quarantined row, returning the admin to ``back``."""

    def actions(row: dict[str, Any]) -> list[PanelAction]:
        if row["status"] != VectorStatus.QUARANTINED.value:
            return []
        url = f"/console/vectors/{row['id']}"
        reason = {"reason": "why (the hospital reads it)"}
        return [
            PanelAction("Release", f"{url}/release", {"back": back}),
            PanelAction("Reject", f"{url}/reject", {"back": back}, reason),
        ]

    return actions


def quarantine_panel(session: Session) -> Panel | None:
    """Every quarantined vector with its screening statistics, to release or reject."""
    held = quarantine.list_quarantined(session)
    names = {h.id: h.name for h in hospitals.list_hospitals(session)}
    rows = [{"hospital": names.get(v.hospital_id, v.hospital_id), **screening_row(v)} for v in held]
    return Panel(
        "Quarantine",
        ["hospital", *SCREENING_COLUMNS],
        rows,
        note="Vectors screening held back; no default or automatic merge takes them. Release "
        "one to let merges take it again, or reject it for good (its hospital reads the reason)."
        if rows
        else "No vector is quarantined.",
        row_actions=quarantine_actions("/console/hospitals"),
        key="quarantine",
        row_key="id",
    )


def screening_panel(session: Session, actor: Actor, hospital: Hospital) -> Panel | None:
    """Screening statistics of the hospital's vectors; an admin releases or rejects."""
    query = (
        select(DataVector)
        .where(DataVector.hospital_id == hospital.id, DataVector.screened_at.is_not(None))
        .order_by(DataVector.created_at.desc(), DataVector.id)
    )
    rows = [screening_row(v) for v in session.scalars(query)]
    if not rows:
        return None
    back = f"/console/hospitals/{hospital.id}"
    return Panel(
        "Screening",
        SCREENING_COLUMNS,
        rows,
        note="Norm, cosine to the running mean of the other hospitals' current vectors, and "
        "validation accuracy of base + vector against the base alone.",
        row_actions=quarantine_actions(back) if actor.is_admin else None,
        key="screening",
        row_key="id",
    )


def contributions_panel(session: Session, actor: Actor, version: ModelVersion) -> Panel:
    """Each input hospital's contribution: metric(all) minus metric(all but it)."""
    title, key = "Contributions per hospital", "contributions"
    why = contributions.not_computable(version)
    if why is not None:
        return Panel(title, [], [], note=f"Not available for this version: {why}.", key=key)
    compute = PanelAction("Compute contributions", f"/console/versions/{version.id}/contributions")
    try:
        document = contributions.read_contributions(session, actor, version.id)
    except PreconditionFailed:
        note = ("Not computed yet. A worker evaluates the version without each hospital "
                "(leave-one-out through the running sums) on the validation split.")  # fmt: skip
        return Panel(title, [], [], note=note, actions=[compute], key=key)
    names = {h.id: h.name for h in hospitals.list_hospitals(session)}
    every = document.get("all") or {}
    rows = [
        {
            "hospital": names.get(c["hospital_id"], c["hospital_id"]),
            "vector": c["vector_id"][:8],
            "Δ accuracy": _signed(c.get("accuracy")),
            "Δ AUC": _signed(c.get("auc_macro")),
            "Δ sensitivity per class": ", ".join(_signed(d) for d in c.get("sensitivity") or []),
            "accuracy without it": (c.get("without") or {}).get("accuracy"),
        }
        for c in document.get("hospitals") or []
    ]
    note = (
        f"metric(all) − metric(all but the hospital) on the {document.get('split')} split; "
        f"all hospitals: accuracy {number(every.get('accuracy'))}, AUC "
        f"{number(every.get('auc_macro'))}. Positive: the hospital helps."
    )
    columns = ["hospital", "vector", "Δ accuracy", "Δ AUC", "Δ sensitivity per class",
               "accuracy without it"]  # fmt: skip
    recompute = PanelAction("Recompute contributions", compute.url)
    return Panel(title, columns, rows, note=note, actions=[recompute], key=key)


VERSION_PANELS.append(contributions_panel)
HOSPITALS_PANELS.append(quarantine_panel)
HOSPITAL_PANELS.append(screening_panel)
