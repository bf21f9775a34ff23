"""Run one secure merge job: the registry's sum of shares A plus the share holder's sum of
shares B, decoded into the only clear value, ``scale * sum_i w_i tau_i``.

Each hospital pre-scaled its shares by its public weight ``w_i``, so both sums are plain
(0/1) sums. Same three transactions as :mod:`worker.merge` (claim, compute outside any
transaction, finish), and the same version and lineage rows. In between:

1. ask the share holder for ``sum_i B_i`` over the job's pair ids (the job id is the
   request id, so a retried job gets the same sum without a second release); a refusal
   (set below K, differencing set) fails the job with the holder's reason; a share
   holder down, hung or failing makes the job wait for it (``worker.runner``). The sum's
   header carries ``W = sum_i w_i`` from the shares B, which must equal the job's;
2. sum the registry's own shares ``sum_i A_i``, moved from the base's running sum of
   shares A (:mod:`medvec.secure.running`): only the shares superseded or added since
   the last secure merge are read;
3. add, decode and scale (``1 / W`` for a weighted mean, ``lambda * N / W`` for task
   arithmetic) into one float vector in the staging area, and hand it to the ordinary
   merge (task arithmetic with lambda 1 onto the base, BatchNorm recalibration, blob).

Each summed set is in the audit log (``secure.sum``) next to the share holder's own log.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.models import DataVector, MergeJob
from app.services import audit
from app.services.secure_shares import SHARE_STATUSES
from app.storage import BlobStore
from medvec.secure.running import SumUpdate, advance_sum, running_sum_name
from medvec.secure.shares import decode_sum_to_vector, read_sum_info
from medvec.vectors import VectorMetadata
from worker.config import WorkerSettings
from worker.errors import HolderUnavailable, JobGone, TerminalJobError
from worker.merge import MergeOutcome, claim, compute, finish
from worker.merge_jobs import WORKER
from worker.merge_plan import MergePlan
from worker.session import session_scope

if TYPE_CHECKING:
    from worker.evaluate import Evaluator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SecureInputs:
    """A secure job's members (pair ids), the sum of their public weights, its params, and
    where every share of its base is (``{pair_id: sha256}``, superseded ones too: the
    running sum of shares A subtracts them)."""

    members: list[str]
    weight: int
    params: dict[str, Any]
    shares: dict[str, str]


def _inputs(session: Session, job_id: str) -> SecureInputs:
    job = session.get(MergeJob, job_id)
    if job is None:
        raise JobGone(f"merge job {job_id} does not exist")
    inputs = job.selection.get("inputs", [])
    members = [str(i["pair_id"]) for i in inputs]
    weight = sum(int(i["weight"]) for i in inputs)
    query = select(DataVector.meta, DataVector.sha256).where(
        DataVector.base_id == job.base_id, DataVector.status.in_(SHARE_STATUSES)
    )
    shares = {str(meta["share"]["pair_id"]): sha for meta, sha in session.execute(query)}
    return SecureInputs(members, weight, dict(job.params), shares)


def fetch_holder_sum(
    settings: WorkerSettings, request_id: str, members: list[str], out: Path
) -> None:
    """Stream the share holder's sum into ``out``. A refusal (4xx) is terminal; a share
    holder out of reach, failing (5xx) or silent for ``share_holder_timeout_s`` raises
    :class:`HolderUnavailable` (the job waits for it)."""
    if not settings.share_holder_url or settings.share_holder_token is None:
        raise TerminalJobError("no share holder configured (MEDVEC_SHARE_HOLDER_URL)")
    token = settings.share_holder_token.get_secret_value()
    holder = settings.share_holder_url.rstrip("/")
    body = {"request_id": request_id, "members": members}
    timeout = httpx.Timeout(
        settings.share_holder_timeout_s, connect=settings.share_holder_connect_timeout_s
    )
    try:
        with (
            httpx.stream(
                "POST",
                f"{holder}/api/v1/sums",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=timeout,
            ) as response,
        ):
            if response.status_code >= 500:
                raise HolderUnavailable(
                    f"share holder at {holder} failing: it answered {response.status_code}"
                )
            if response.status_code != 200:
                response.read()
                raise TerminalJobError(_refusal(holder, response))
            with out.open("wb") as handle:
                for chunk in response.iter_bytes(1 << 20):
                    handle.write(chunk)
    except httpx.TransportError as exc:
        raise HolderUnavailable(_outage(holder, exc, settings)) from exc


def _outage(holder: str, exc: httpx.TransportError, settings: WorkerSettings) -> str:
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return (
            f"share holder at {holder} did not answer within "
            f"{settings.share_holder_timeout_s:g} s ({type(exc).__name__})"
        )
    return f"share holder at {holder} unreachable ({type(exc).__name__}: {exc})"


def _refusal(holder: str, response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = {}
    code = body.get("code", f"http_{response.status_code}")
    message = body.get("message", response.text)
    return f"the share holder at {holder} refused the sum ({code}): {message}"


def _own_sum(store: BlobStore, plan: MergePlan, inputs: SecureInputs, out: Path) -> SumUpdate:
    """``sum_i A_i``, moved from the base's running sum of shares A."""

    def locate(pair_id: str) -> Path | None:
        sha = inputs.shares.get(pair_id)
        try:
            return store.local_path(sha) if sha is not None else None
        except FileNotFoundError:
            return None

    running = store.derived_path(running_sum_name(plan.base_sha256))
    return advance_sum(running, inputs.members, locate, out)


def compute_secure(
    plan: MergePlan,
    store: BlobStore,
    evaluator: Evaluator,
    settings: WorkerSettings,
    inputs: SecureInputs,
) -> Any:
    """Both sums, decoded into one vector, merged onto the base like any vector."""
    stamp = f"{plan.job_id}-{time.monotonic_ns()}"
    sum_a = store.staging_path(f"sum-a-{stamp}.safetensors")
    sum_b = store.staging_path(f"sum-b-{stamp}.safetensors")
    tau = store.staging_path(f"secure-tau-{stamp}.safetensors")
    try:
        members, params = inputs.members, inputs.params
        fetch_holder_sum(settings, plan.job_id, members, sum_b)
        own = _own_sum(store, plan, inputs, sum_a)
        log.info(
            "secure merge job %s: own sum %s (%d shares read for %d members)",
            plan.job_id,
            "moved" if own.moved else "rebuilt",
            own.shares_read,
            len(members),
        )
        total = read_sum_info(sum_b).weight
        if total != inputs.weight:
            raise TerminalJobError(
                f"the share holder's shares record public weights summing to {total}, the "
                f"job's {inputs.weight} (a job queued before public weights, or shares of "
                "one vector that disagree): request the merge again"
            )
        scale = 1.0 / total
        if "lambda" in params:  # task arithmetic, the public weights normalised to mean 1
            scale = float(params["lambda"]) * len(members) / total
        metadata = VectorMetadata(
            base_id=plan.base_id,
            base_sha256=plan.base_sha256,
            hospital="secure-sum",
            num_samples=total,
            extra={"merge_job_id": plan.job_id, "members": str(len(members))},
        )
        # running statistics are averaged by every merge, task arithmetic's included
        decode_sum_to_vector(sum_a, sum_b, tau, metadata, scale, stat_scale=1.0 / total)
        clear = replace(
            plan,
            vector_ids=[plan.job_id],
            vector_paths=[tau],
            weights=[1.0],
            rebase=False,
            sums_weighting=None,
        )
        return compute(clear, store, evaluator, settings)
    finally:
        for path in (sum_a, sum_b, tau):
            path.unlink(missing_ok=True)


def run_secure_merge(
    sessions: sessionmaker[Session],
    store: BlobStore,
    job_id: str,
    settings: WorkerSettings,
    *,
    evaluator: Evaluator,
) -> MergeOutcome:
    """Run secure merge job ``job_id`` to its end; safe to call again at any time."""
    with session_scope(sessions) as session:
        claimed = claim(session, store, job_id, settings)
        inputs = _inputs(session, job_id)
    if isinstance(claimed, MergeOutcome):
        return claimed
    computed = compute_secure(claimed, store, evaluator, settings, inputs)
    with session_scope(sessions) as session:
        outcome = finish(session, claimed, computed, settings)
        if outcome.ran:
            audit.record(
                session,
                WORKER,
                "secure.sum",
                target_type="merge_job",
                target_id=job_id,
                members=inputs.members,
                version_id=outcome.version_id,
            )
    log.info("secure merge job %s: version %s", job_id, outcome.version_id)
    return outcome
