"""Releasing plain sums of shares B to the registry, never a set that reveals one hospital.

A request names its members (pair ids, each counted once: a weight other than 1 is
refused with ``weights_not_allowed``, since integer weights expose each vector modulo
some number) and carries a ``request_id`` (the registry's merge job id): asking again
with the same id and members returns the same sum without counting as a new release, so
a retried merge goes through. A refused request is not recorded and does not enter the
guard's history. Requests are serialised (a table lock), so two concurrent requests
cannot each pass the differencing check against a history that lacks the other.

Each hospital pre-scaled its vector by its public weight before splitting it; the sum's
header carries the members' public weights' sum (from their shares B), which the
registry divides by.

The guard counts hospitals, not pair ids (a hospital's new push is a new pair id, and
``{a, b, c_old}`` then ``{a, b, c_new}`` would reveal c's change). The sum itself is
moved from the base's running sum of shares B (:mod:`medvec.secure.running`): only the
members that changed since the last sum are read, and the guard has already passed the
set, whichever way it is computed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from aggregator import audit
from aggregator.auth import AggActor
from aggregator.models import AggShare, SummedSet
from app.services.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.storage import BlobStore
from medvec.errors import DifferencingSetError, SetTooSmallError, WeightsNotAllowedError
from medvec.secure.guard import check_query, require_plain
from medvec.secure.running import SumUpdate, advance_sum, running_sum_name


class SetRefused(Forbidden):
    code = "set_refused"


class SetTooSmall(SetRefused):
    code = "set_too_small"


class DifferencingSet(SetRefused):
    code = "differencing_set"


class WeightsNotAllowed(InvalidInput):
    code = "weights_not_allowed"


def plain_members(members: Sequence[str] | Mapping[str, int]) -> dict[str, int]:
    """The request's members as ``{pair_id: 1}``: a list of pair ids, each once, or (the
    earlier form of the request) a mapping whose every weight is 1."""
    if isinstance(members, Mapping):
        try:
            require_plain(members)
        except WeightsNotAllowedError as exc:
            raise WeightsNotAllowed(exc.message, hint=exc.hint, **exc.detail) from exc
        return {str(m): 1 for m in members}
    repeated = sorted(m for m, count in Counter(members).items() if count > 1)
    if repeated:
        raise WeightsNotAllowed(
            f"{len(repeated)} pair id(s) are listed more than once: a sum counts each once",
            hint="list each pair id once",
            members=repeated,
        )
    return dict.fromkeys(map(str, members), 1)


def _serialise(session: Session) -> None:
    """Hold the write lock on the released sums until the transaction ends."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(SummedSet).where(text("0")).values(request_id=SummedSet.request_id))
    else:
        session.execute(text("LOCK TABLE agg_summed_sets IN SHARE ROW EXCLUSIVE MODE"))


def _owners(
    session: Session, history: list[dict[str, int]], members: Mapping[str, int]
) -> dict[str, str]:
    """Each pair id's hospital: the guard counts hospitals, not pair ids."""
    pairs = set(members).union(*history)
    query = select(AggShare.pair_id, AggShare.hospital).where(AggShare.pair_id.in_(pairs))
    return dict(session.execute(query).all())


def _check(session: Session, members: Mapping[str, int], k: int) -> None:
    history = [dict(s.members) for s in session.scalars(select(SummedSet))]
    try:
        check_query(history, members, k, _owners(session, history, members))
    except SetTooSmallError as exc:
        raise SetTooSmall(exc.message, hint=exc.hint, **exc.detail) from exc
    except DifferencingSetError as exc:
        raise DifferencingSet(exc.message, hint=exc.hint, **exc.detail) from exc


def release_sum(
    session: Session,
    store: BlobStore,
    actor: AggActor,
    *,
    request_id: str,
    members: Sequence[str] | Mapping[str, int],
    k: int,
) -> tuple[Path, SummedSet]:
    """Check, record and compute the plain sum ``sum_j B_j``; returns the staged sum file."""
    if not members:
        raise InvalidInput("name the members of the sum", hint="members: [pair_id, ...]")
    members = plain_members(members)
    _serialise(session)
    released = session.scalar(select(SummedSet).where(SummedSet.request_id == request_id))
    if released is not None and released.members != members:
        raise Conflict(
            f"request {request_id} was already answered for other members",
            hint="use a new request id for a new sum",
        )
    shares = {
        s.pair_id: s for s in session.scalars(select(AggShare).where(AggShare.pair_id.in_(members)))
    }
    missing = sorted(set(members) - set(shares))
    if missing:
        raise NotFound(
            f"{len(missing)} member(s) have no share B here",
            hint="the hospital's push to the share holder has not completed",
            missing=missing,
        )
    bases = {s.base_sha256 for s in shares.values()}
    if len(bases) > 1:
        raise InvalidInput(
            "the members' shares were made against different bases",
            hint="sum the shares of one base at a time",
            bases=sorted(bases),
        )
    out = store.staging_path()  # never named after the request id, which is any text
    if released is None:
        _check(session, members, k)
    base_sha256 = bases.pop()
    computed = _running_sum(session, store, base_sha256, members, out)
    if released is None:
        released = SummedSet(
            request_id=request_id, members=members, requested_by=actor.name, sha256=computed.sha256
        )
        session.add(released)
        session.flush()
        audit.record(
            session, actor, "sum.released", released.id, request_id=request_id, members=members
        )
    return out, released


def _running_sum(
    session: Session, store: BlobStore, base_sha256: str, members: dict[str, int], out: Path
) -> SumUpdate:
    """The sum, moved from this base's running sum of shares B (under the lock
    ``_serialise`` holds, so one request at a time moves it)."""

    def locate(pair_id: str) -> Path | None:
        sha = session.scalar(select(AggShare.sha256).where(AggShare.pair_id == pair_id))
        try:
            return store.local_path(sha) if sha is not None else None
        except FileNotFoundError:
            return None

    running = store.derived_path(running_sum_name(base_sha256))
    return advance_sum(running, members, locate, out)


def list_released(session: Session) -> list[SummedSet]:
    return list(session.scalars(select(SummedSet).order_by(SummedSet.created_at)))
