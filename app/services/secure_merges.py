"""Secure merge requests: pick the shares, read their public weights, key and queue the job.

The job is an ordinary ``MergeJob`` (strategy ``secure_weighted_mean`` or
``secure_task_arithmetic``), so it is idempotent by its inputs hash, leased and retried
like any merge, and its version is evaluated and promoted like any other. The registry
chooses no weight: each hospital pre-scaled its shares by its public weight at push time
(its sample count, 1 with distributed DP), and the share holder only releases plain
sums. A set is refused when its weights' sum would let the sum of vectors of norm
``MEDVEC_MAX_VECTOR_NORM`` wrap around the ring, and when it mixes shares pushed before
public weights (which encode their vectors unscaled) with pre-scaled ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.models import BaseModelRecord, DataVector, JobStatus, MergeJob, VectorStatus
from app.schemas.secure import SecureMergeCreate
from app.security import Actor
from app.services.calibration import calibration_source
from app.services.errors import InvalidInput, NotFound, PreconditionFailed
from app.services.hospitals import of_present_hospital, refuse_removed
from app.services.merges import current_base, enqueue
from app.services.secure_shares import SHARE_STATUSES
from medvec.secure.encoding import FRAC_BITS, max_total_weight


def _shares(session: Session, base: BaseModelRecord, ids: Sequence[str] | None) -> list[DataVector]:
    if ids is None:
        query = select(DataVector).where(
            DataVector.base_id == base.id,
            DataVector.status == VectorStatus.SHARE,
            of_present_hospital(),
        )
        return list(session.scalars(query.order_by(DataVector.created_at, DataVector.id)))
    rows = {v.id: v for v in session.scalars(select(DataVector).where(DataVector.id.in_(ids)))}
    missing = [i for i in ids if i not in rows]
    if missing:
        raise NotFound(f"no share {missing[0]}", hint="list shares with GET /api/v1/vectors")
    refuse_removed(session, [rows[i] for i in ids])
    wrong = [i for i in ids if rows[i].status not in SHARE_STATUSES or rows[i].base_id != base.id]
    if wrong:
        raise InvalidInput(
            f"vector {wrong[0]} is not a share of base {base.id}",
            hint="a secure merge takes shares pushed with `medvec push --secure` for this base",
            vector_ids=wrong,
        )
    return [rows[i] for i in ids]


def _weights(shares: list[DataVector], settings: Settings) -> list[int]:
    """The public weights the shares were pre-scaled by (a share pushed before public
    weights encodes its vector unscaled: weight 1)."""
    if settings.max_vector_norm is None:
        raise InvalidInput(
            "secure merges need a norm bound: without it the encoded sum may overflow",
            hint="set MEDVEC_MAX_VECTOR_NORM (docs/secure-aggregation.md, overflow analysis)",
        )
    recorded = [s.meta["share"].get("weight") for s in shares]
    legacy = [s.id for s, w in zip(shares, recorded, strict=True) if w is None]
    if legacy and len(legacy) < len(shares):
        raise InvalidInput(
            f"{len(legacy)} of the {len(shares)} shares were pushed before public weights: "
            "they encode their vectors unscaled and cannot be averaged with pre-scaled ones",
            hint="ask those hospitals to push again (`medvec push --secure`), or merge the "
            "older shares on their own",
            vector_ids=legacy,
        )
    weights = [int(w or 1) for w in recorded]
    limit = max_total_weight(settings.max_vector_norm)
    if sum(weights) > limit:
        raise InvalidInput(
            f"the shares' public weights sum to {sum(weights)}, over {limit}: their sum "
            f"could wrap around the ring at norm bound {settings.max_vector_norm}",
            hint="merge fewer shares, lower MEDVEC_MAX_VECTOR_NORM, or have hospitals push "
            "with a smaller --secure-weight",
            total_weight=sum(weights),
            limit=limit,
        )
    return weights


def _hash(base: BaseModelRecord, strategy: str, params: dict[str, Any], inputs: list[Any]) -> str:
    document = {
        "base": base.sha256,
        "strategy": strategy,
        "params": params,
        "inputs": sorted([i["sha256"], i["weight"]] for i in inputs),
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


def request_secure_merge(
    session: Session, request: SecureMergeCreate, *, actor: Actor, settings: Settings
) -> tuple[MergeJob, bool]:
    """Create (or find) the secure merge job for ``request``; ``(job, queued_now)``."""
    if not settings.share_holder_url or settings.share_holder_token is None:
        raise PreconditionFailed(
            "this registry has no share holder configured",
            hint="set MEDVEC_SHARE_HOLDER_URL and MEDVEC_SHARE_HOLDER_TOKEN",
        )
    base = session.get(BaseModelRecord, request.base_id) if request.base_id else None
    if request.base_id and base is None:
        raise NotFound(f"no base {request.base_id}", hint="list bases with GET /api/v1/bases")
    base = base or current_base(session)
    shares = _shares(session, base, request.vector_ids)
    k = settings.secure_min_set_size
    hospitals = len({s.hospital_id for s in shares})
    if hospitals < k:
        # as the share holder counts: a hospital's old and new share are one hospital
        raise InvalidInput(
            f"a secure merge sums the shares of at least {k} hospitals; {hospitals} selected "
            "(K counts hospitals, not shares)",
            hint="name shares of more hospitals, or wait until more push with "
            "`medvec push --secure`",
            k=k,
            selected=hospitals,
        )
    weights = _weights(shares, settings)
    inputs = [
        {
            "vector_id": s.id,
            "hospital_id": s.hospital_id,
            "sha256": s.sha256,
            "num_samples": s.num_samples,
            "pair_id": s.meta["share"]["pair_id"],
            "weight": w,
            "staleness": 0,
        }
        for s, w in zip(shares, weights, strict=True)
    ]
    params: dict[str, Any] = {"secure": True, "frac_bits": FRAC_BITS, "seed": 0}
    if request.strategy == "task_arithmetic":
        params["lambda"] = request.lambda_
    params["calibration"] = calibration_source(
        session, base, request.calibration, request.benchmark_id
    )
    strategy = f"secure_{request.strategy}"
    digest = _hash(base, strategy, params, inputs)
    job = session.scalars(select(MergeJob).where(MergeJob.inputs_hash == digest)).first()
    if job is not None and job.status is not JobStatus.FAILED:
        return job, False
    job = job or MergeJob(
        base_id=base.id,
        strategy=strategy,
        params=params,
        selection={"mode": "secure", "inputs": inputs},
        benchmark_id=request.benchmark_id,
        inputs_hash=digest,
        requested_by=actor.name,
    )
    enqueue(session, actor, job, vector_ids=[i["vector_id"] for i in inputs])
    return job, True
