"""Accepting share A of a secure push: the registry's half of a hospital's vector.

A share is uniform noise on its own, so the registry checks what it can (the file is a
share A of this hospital for a registered base, with the base's tensor names and shapes)
and stores it as a ``DataVector`` row in status ``share``: the hospital's current secure
contribution for that base, which supersedes its previous share (``share_superseded``).
Plain merges, screening and per-vector evaluation never see these rows (they take
``validated`` vectors only); the secure merge sums them with the share holder's.
The norm bound cannot be checked on a share (see docs/secure-aggregation.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.models import DataVector, ModelVersion, VectorStatus
from app.security import Actor
from app.services import audit, privacy
from app.services.bases import find_base
from app.services.errors import HospitalMismatch, InvalidInput, UnknownBase
from app.services.merges import SECURE_STRATEGIES
from app.services.staging import Staged
from app.services.vectors import MAX_NUM_SAMPLES, register_staged, supersede
from app.storage import BlobStore
from medvec.errors import MedVecError
from medvec.models.spec import FORMAT_KEY
from medvec.vectors.header import read_safetensors_header

__all__ = ["SHARE_STATUSES", "accept_share", "is_secure_version", "is_share_file"]

#: a share row is current (``share``) or superseded by its hospital's next share
SHARE_STATUSES = (VectorStatus.SHARE, VectorStatus.SHARE_SUPERSEDED)


#: ``medvec.secure.shares.SHARE_FORMAT``, spelled here so that the upload path, which asks
#: every file whether it is a share, does not import torch (shares does)
SHARE_FORMAT = "share"


def _shares() -> Any:
    from medvec.secure import shares

    return shares


def is_secure_version(version: ModelVersion) -> bool:
    """Whether ``version`` came from a secure merge. The worker records the strategy of the
    clear step (task arithmetic at lambda 1 of the decoded sum); the params keep
    ``secure``."""
    return version.strategy in SECURE_STRATEGIES or bool((version.params or {}).get("secure"))


def is_share_file(path: Path, *, max_header_bytes: int) -> bool:
    """Whether the file says it is a share; a malformed file is left to vector validation."""
    try:
        header = read_safetensors_header(path, max_header_bytes)
    except MedVecError:
        return False
    return header.metadata.get(FORMAT_KEY) == SHARE_FORMAT


def accept_share(
    session: Session, store: BlobStore, actor: Actor, staged: Staged, *, max_header_bytes: int
) -> tuple[DataVector, bool]:
    """Register the staged share A as ``actor``'s current share; returns (row, created)."""

    def record(vector: DataVector) -> None:
        # as for a plain vector, and under the same lock (register_staged holds it)
        privacy.check_budget(session, vector.hospital_id, vector.meta)
        session.add(vector)
        session.flush()
        superseded = supersede(
            session,
            actor,
            vector,
            (VectorStatus.SHARE,),
            VectorStatus.SHARE_SUPERSEDED,
            "share.superseded",
        )
        audit.record(
            session,
            actor,
            "share.accepted",
            target_type="vector",
            target_id=vector.id,
            sha256=vector.sha256,
            base_id=vector.base_id,
            pair_id=vector.meta["share"]["pair_id"],
            supersedes=superseded,
        )

    return register_staged(
        session,
        store,
        actor,
        staged,
        lambda: _checked_row(session, store, actor, staged, max_header_bytes),
        record,
    )


def _checked_row(
    session: Session, store: BlobStore, actor: Actor, staged: Staged, max_header_bytes: int
) -> DataVector:
    try:
        role = _shares().read_share_info(staged.path, max_header_bytes=max_header_bytes).role
        if role != "A":
            raise InvalidInput(
                f"this is share {role}; the registry takes share A",
                hint="send share B to the share holder (`medvec push --secure` does both)",
            )
        metadata = _shares().read_share_metadata(staged.path, max_header_bytes=max_header_bytes)
        base = find_base(session, metadata.base_id)
        if base is None:
            raise UnknownBase(
                f"the share's base {metadata.base_id!r} is not registered here",
                hint="pull the current base (`medvec base pull`) and train against it",
                base_id=metadata.base_id,
            )
        info = _shares().validate_share(
            staged.path, store.local_path(base.sha256), max_header_bytes=max_header_bytes
        )
    except MedVecError as exc:
        raise InvalidInput(exc.message, hint=exc.hint, **exc.detail) from exc
    if metadata.hospital != actor.hospital_name or info.hospital != actor.hospital_name:
        raise HospitalMismatch(
            f"the share says it comes from hospital {metadata.hospital!r}, the token belongs "
            f"to {actor.hospital_name!r}",
            hint="push with your own hospital's token",
        )
    if info.base_sha256 != base.sha256 or metadata.num_samples > MAX_NUM_SAMPLES:
        raise InvalidInput(
            "the share's base sha256 or sample count does not fit the registry",
            hint="split a vector computed against the registered base",
        )
    return DataVector(
        hospital_id=actor.hospital_id,
        base_id=base.id,
        sha256=staged.sha256,
        size=staged.size,
        norm=None,
        num_samples=metadata.num_samples,
        meta={**metadata.model_dump(mode="json"), "share": info.model_dump(mode="json")},
        status=VectorStatus.SHARE,
    )
