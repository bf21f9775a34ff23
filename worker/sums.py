"""Keep each base's running sums up to date, build linear merges from them, check them.

``refresh_sums`` runs when a vector is accepted (and from the sweeper): for each
weighting it asks ``app.services.running_sums.plan_change`` what the sums must become,
subtracts the superseded shares and adds the new ones in one pass over two vectors and
the sums (``medvec.merging.sums.update_sums``), or rebuilds them from every member when
this machine's file does not hold what the database says it held, and records the new
members, planning again if another worker changed them first.

``check_sums`` (the sweeper's periodic check) recomputes the sums from scratch, records
the drift of the running file against it, and keeps the recomputed file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from app.models import BaseModelRecord
from app.services.running_sums import (
    WEIGHTINGS,
    Member,
    SumsChange,
    has_sums,
    plan_change,
    record_change,
    record_check,
    sums_file_name,
    wanted_members,
)
from app.storage import BlobStore
from medvec.errors import MedVecError
from medvec.merging.sums import Share, build_sums, compare_sums, read_sums_header, update_sums
from worker.session import session_scope

log = logging.getLogger(__name__)

#: plans computed before giving up to a concurrent worker (the next acceptance retries)
MAX_TRIES = 3


def sums_path(store: BlobStore, base_id: str, weighting: str) -> Path:
    return store.derived_path(sums_file_name(base_id, weighting))


def holds(path: Path, base_sha256: str, members: dict[str, float]) -> bool:
    """Whether the sums file at ``path`` is readable and holds exactly ``members``."""
    if not path.is_file():
        return False
    try:
        header = read_sums_header(path)
    except (MedVecError, OSError, ValueError):
        return False
    return header.base_sha256 == base_sha256 and header.members == members


def _shares(store: BlobStore, members: tuple[Member, ...]) -> list[Share]:
    return [Share(m.vector_id, store.local_path(m.sha256), m.weight) for m in members]


def apply_change(store: BlobStore, change: SumsChange) -> None:
    """Write the sums ``change`` asks for: an update of this machine's file when it holds
    what the change starts from, else a rebuild from every member."""
    path = sums_path(store, change.base_id, change.weighting)
    base = store.local_path(change.base_sha256)
    held = {m.vector_id: m.weight for m in change.held}
    if not change.rebuild and holds(path, change.base_sha256, held):
        update_sums(
            base,
            path,
            path,
            remove=_shares(store, change.remove),
            add=_shares(store, change.add),
            base_sha256=change.base_sha256,
        )
        return
    build_sums(base, _shares(store, change.after), path, base_sha256=change.base_sha256)


def refresh_sums(sessions: sessionmaker[Session], store: BlobStore, base_id: str) -> list[str]:
    """Bring ``base_id``'s sums up to date; the weightings that changed."""
    changed = []
    for weighting in WEIGHTINGS:
        for _ in range(MAX_TRIES):
            with session_scope(sessions) as session:
                base = session.get(BaseModelRecord, base_id)
                change = plan_change(session, base, weighting) if base is not None else None
            if change is None:
                break
            apply_change(store, change)
            with session_scope(sessions) as session:
                if record_change(session, change):
                    changed.append(weighting)
                    break
            log.info("running sums of base %s (%s) moved on: planning again", base_id, weighting)
    return changed


def check_sums(sessions: sessionmaker[Session], store: BlobStore, base_id: str) -> dict[str, float]:
    """Recompute every weighting's sums of ``base_id`` from scratch and compare: the drift
    of the running file (``inf`` when it was missing or held other members).

    An update that is due is made first, so a refresh whose task was lost (a worker
    killed after a hospital's removal, say) is made by the next periodic check."""
    refresh_sums(sessions, store, base_id)
    drifts = {}
    for weighting in WEIGHTINGS:
        with session_scope(sessions) as session:
            base = session.get(BaseModelRecord, base_id)
            if base is None or not has_sums(session, base_id, weighting):
                continue
            if plan_change(session, base, weighting) is not None:
                continue  # another worker moved the sums on since: its refresh makes it
            members = tuple(wanted_members(session, base, weighting))
            base_sha = base.sha256
        path = sums_path(store, base_id, weighting)
        fresh = path.with_name(path.name + ".check")
        build_sums(store.local_path(base_sha), _shares(store, members), fresh, base_sha256=base_sha)
        drift = compare_sums(path, fresh) if path.is_file() else float("inf")
        fresh.replace(path)
        with session_scope(sessions) as session:
            record_check(session, base_id, weighting, drift)
        drifts[weighting] = drift
        if drift > 1e-9:
            log.warning(
                "running sums of base %s (%s) drifted by %.2e: rebuilt", base_id, weighting, drift
            )
    return drifts
