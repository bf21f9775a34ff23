"""``fsck``: the blob store checked against the database, read-only.

Every row that names a blob (base, vector, version, benchmark, which also holds the
calibration images) must find it under its sha256 with the recorded size, and with
``verify_hashes`` its bytes must still hash to that name. Every blob must be named by
some row. Every version must keep its lineage (at least one input). Files in the
staging area that no open upload session owns are listed: the sweeper removes them
once they are old, they never count as damage.

Safe on a live registry: nothing is written, and a blob renamed into place within
``grace_s`` seconds (its request or merge may not have committed its row yet) is
listed as recent rather than as an orphan.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import (
    BaseModelRecord,
    Benchmark,
    DataVector,
    ModelVersion,
    UploadSession,
    UploadStatus,
    VersionInput,
)
from app.services.uploads import part_name
from app.storage import BlobStore
from medvec.hashing import sha256_file

#: the tables whose rows name a blob by (sha256, size)
BLOB_TABLES = (BaseModelRecord, DataVector, ModelVersion, Benchmark)

#: seconds since a blob was renamed into place during which a missing row is not yet damage
DEFAULT_GRACE_S = 60.0


@dataclass(frozen=True)
class Finding:
    """One thing fsck found: ``kind``, the blob it concerns, the rows naming it, and why."""

    kind: str
    message: str
    sha256: str | None = None
    rows: list[str] = field(default_factory=list)


@dataclass
class Report:
    """What was checked, what is wrong (``problems``) and what is only worth knowing."""

    rows: int = 0
    blobs: int = 0
    hashed: int = 0
    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": {"rows": self.rows, "blobs": self.blobs, "hashed": self.hashed},
            "problems": [asdict(f) for f in self.problems],
            "notes": [asdict(f) for f in self.notes],
        }


def _blob_rows(session: Session) -> dict[str, list[tuple[str, int]]]:
    """sha256 → ``[("table:id", recorded size), ...]`` over every blob-naming table."""
    named: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for model in BLOB_TABLES:
        table = model.__tablename__
        for row_id, sha256, size in session.execute(select(model.id, model.sha256, model.size)):
            named[sha256].append((f"{table}:{row_id}", int(size)))
    return named


def named_blobs(session: Session) -> set[str]:
    """Every digest some row names (a blob no row names is an orphan)."""
    return set(_blob_rows(session))


def _check_rows(store: BlobStore, named: dict[str, list[tuple[str, int]]], report: Report) -> None:
    for sha256, rows in sorted(named.items()):
        report.rows += len(rows)
        ids = [row for row, _ in rows]
        if not store.exists(sha256):
            report.problems.append(
                Finding("missing_blob", f"no blob {sha256} for {', '.join(ids)}", sha256, ids)
            )
            continue
        actual = store.size(sha256)
        wrong = [row for row, size in rows if size != actual]
        if wrong:
            sizes = sorted({size for _, size in rows})
            report.problems.append(
                Finding(
                    "size_mismatch",
                    f"blob {sha256} holds {actual} bytes, rows record {sizes}",
                    sha256,
                    wrong,
                )
            )


def _check_hashes(
    store: BlobStore, named: dict[str, list[tuple[str, int]]], report: Report
) -> None:
    for sha256 in store.iter_blobs():
        actual = sha256_file(store.local_path(sha256))
        report.hashed += 1
        if actual != sha256:
            ids = [row for row, _ in named.get(sha256, [])]
            report.problems.append(
                Finding("hash_mismatch", f"blob {sha256} hashes to {actual}", sha256, ids)
            )


def _check_orphans(
    store: BlobStore,
    named: dict[str, list[tuple[str, int]]],
    on_disk: list[str],
    report: Report,
    grace_s: float,
) -> None:
    now = time.time()
    for sha256 in on_disk:
        if sha256 in named:
            continue
        try:
            # ctime: when the blob was renamed into place (mtime is when its bytes arrived)
            age = now - store.local_path(sha256).stat().st_ctime
        except FileNotFoundError:
            continue
        if age < grace_s:
            report.notes.append(
                Finding(
                    "recent_blob",
                    f"blob {sha256} has no row yet; it was stored {age:.0f} s ago and its "
                    "row may still be committing",
                    sha256,
                )
            )
        else:
            report.problems.append(
                Finding("orphan_blob", f"blob {sha256} is named by no row", sha256)
            )


def _check_lineage(session: Session, report: Report) -> None:
    inputs = select(VersionInput.version_id).distinct()
    query = select(ModelVersion.id).where(ModelVersion.id.not_in(inputs))
    for version_id in session.scalars(query):
        row = f"{ModelVersion.__tablename__}:{version_id}"
        report.problems.append(
            Finding("version_without_inputs", f"version {version_id} has no inputs", rows=[row])
        )


def _check_staging(session: Session, store: BlobStore, report: Report) -> None:
    open_sessions = select(UploadSession.id).where(UploadSession.status == UploadStatus.OPEN)
    owned = {part_name(upload_id) for upload_id in session.scalars(open_sessions)}
    for path in store.staging_files():
        if path.name in owned:
            continue
        try:
            size = path.stat().st_size
        except FileNotFoundError:  # committed or swept meanwhile
            continue
        report.notes.append(
            Finding(
                "staging_leftover",
                f"staging file {path.name} ({size} bytes) is owned by no open upload; the "
                "sweeper removes it once it is older than MEDVEC_STAGING_MAX_AGE_S",
            )
        )


def check(
    session: Session,
    store: BlobStore,
    *,
    verify_hashes: bool = False,
    grace_s: float = DEFAULT_GRACE_S,
) -> Report:
    """Check ``store`` against the rows ``session`` sees; writes nothing."""
    report = Report()
    on_disk = store.iter_blobs()  # listed before the rows are read: a blob and row
    # committed in between are then seen together, never as an orphan
    named = _blob_rows(session)
    report.blobs = len(on_disk)
    _check_rows(store, named, report)
    if verify_hashes:
        _check_hashes(store, named, report)
    _check_orphans(store, named, on_disk, report, grace_s)
    _check_lineage(session, report)
    _check_staging(session, store, report)
    return report
