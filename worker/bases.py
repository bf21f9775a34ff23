"""Verify a newly registered base: do its tensors build the architecture its spec names?

The registry checks a base's header without torch (format, spec, tensor layout); this
check rebuilds the architecture (on the meta device: no weights are allocated) and
compares every tensor name and shape. A base takes vectors and merges only once it is
``ready``; one that fails is ``rejected`` with the reason. Redelivery is harmless: a
base that is no longer ``verifying`` is left as it is.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import BaseModelRecord, BaseStatus
from app.security import Actor
from app.services import audit
from app.storage import BlobStore
from medvec.errors import MedVecError
from medvec.models.files import check_shapes
from medvec.models.header import read_model_header, spec_of

log = logging.getLogger(__name__)

WORKER = Actor.system("worker")


def verify_base(session: Session, store: BlobStore, base_id: str) -> BaseStatus | None:
    """Check base ``base_id`` and record ``ready`` or ``rejected``; its status (None: no base)."""
    query = select(BaseModelRecord).where(BaseModelRecord.id == base_id).with_for_update()
    base = session.scalar(query)
    if base is None:
        log.warning("base %s is gone; nothing to verify", base_id)
        return None
    if base.status is not BaseStatus.VERIFYING:
        return base.status
    path = store.local_path(base.sha256)
    try:
        header = read_model_header(path)
        check_shapes({k: t.shape for k, t in header.tensors.items()}, spec_of(header, path))
    except MedVecError as exc:
        base.status, base.reason = BaseStatus.REJECTED, exc.message
        action = "base.rejected"
    else:
        base.status, base.reason = BaseStatus.READY, None
        action = "base.verified"
    audit.record(session, WORKER, action, target_type="base", target_id=base.id, reason=base.reason)
    session.flush()
    return base.status
