"""Blobs no row names: what a process killed between a blob's rename into the store and
its row's commit leaves (``tests/faults`` makes one with SIGKILL). A client that sends the
same bytes again claims the blob, so nothing accepted is lost; the sweeper removes one
that nobody stored or claimed for ``staging_max_age_s``, and only that one."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.services.integrity import check
from medvec.hashing import sha256_file
from tests.api.conftest import Hospital, Registry
from tests.api.factories import ModelKit
from tests.api.helpers import push
from worker.sweeper import orphan_blobs

pytestmark = pytest.mark.databases  # SQLite and PostgreSQL

MAX_AGE_S = 3600.0


@pytest.fixture()
def sweeper(registry: Registry) -> Any:
    """The sweeper's orphan pass on the registry: the digests it removed."""
    settings = registry.worker_settings(staging_max_age_s=MAX_AGE_S)

    def sweep() -> list[str]:
        with registry.session() as session:
            return orphan_blobs(session, registry.store, settings)

    return sweep


def _orphan(registry: Registry, source: Path, age_s: float) -> Path:
    """``source`` stored as a blob with no row, stored ``age_s`` seconds ago."""
    staged = registry.store.staging_path()
    shutil.copy(source, staged)
    registry.store.commit(staged, sha256_file(source))
    blob = registry.store.local_path(sha256_file(source))
    then = time.time() - age_s
    os.utime(blob, (then, then))
    return blob


@pytest.fixture()
def orphans(registry: Registry) -> Iterator[list[str]]:
    """Digests of the orphans a test makes; deleted afterwards, so fsck stays clean."""
    made: list[str] = []
    yield made
    for sha256 in made:
        registry.store.delete(sha256)


def test_a_retry_of_the_same_bytes_claims_an_orphan_and_the_sweeper_keeps_it(
    registry: Registry,
    base: dict[str, Any],
    kit: ModelKit,
    hospital: Hospital,
    sweeper: Any,
) -> None:
    vector = kit.vector(hospital.name, scale=1.0 + int.from_bytes(os.urandom(2)) / 1e5)
    blob = _orphan(registry, vector, age_s=2 * MAX_AGE_S)  # killed before the row committed
    with registry.client(hospital.token) as client:
        response = push(client, vector)  # the client never got an answer: it sends again
    assert response.status_code == 201, response.text
    assert blob.stat().st_mtime > time.time() - 60  # claimed: stored again now
    assert sweeper() == []
    assert blob.read_bytes() == vector.read_bytes()
    with registry.client(hospital.token) as client:
        download = client.get(f"/vectors/{response.json()['id']}/download")
    assert download.status_code == 200 and download.content == vector.read_bytes()


def test_the_sweeper_removes_an_old_orphan_and_spares_young_ones_and_named_blobs(
    registry: Registry,
    kit: ModelKit,
    base: dict[str, Any],
    sweeper: Any,
    orphans: list[str],
) -> None:
    old = _orphan(registry, kit.raw(os.urandom(1000), "old-orphan"), age_s=2 * MAX_AGE_S)
    young = _orphan(registry, kit.raw(os.urandom(1000), "young-orphan"), age_s=MAX_AGE_S / 2)
    orphans.append(young.name)
    named = registry.store.local_path(base["sha256"])
    os.utime(named, (time.time() - 2 * MAX_AGE_S,) * 2)  # old, but its row names it

    assert sweeper() == [old.name]
    assert not old.exists() and young.exists() and named.exists()
    assert not list(registry.store.staging.glob("orphan-*"))
    with registry.session() as session:
        report = check(session, registry.store, grace_s=MAX_AGE_S)
    # the registry is shared with other test files, whose invented rows (a version without
    # inputs) fsck reports too: this test answers for orphan blobs only
    assert [p for p in report.problems if p.kind == "orphan_blob"] == []


def test_a_commit_of_the_same_bytes_between_the_sweepers_check_and_its_rename_keeps_the_blob(
    registry: Registry, kit: ModelKit, orphans: list[str]
) -> None:
    """The sweeper renames an orphan out of place before deleting it and reads its mtime
    again: a commit that claimed the blob just before the rename puts it back."""
    source = kit.raw(os.urandom(1000), "raced-orphan")
    blob = _orphan(registry, source, age_s=2 * MAX_AGE_S)
    orphans.append(blob.name)
    staged = registry.store.staging_path()
    shutil.copy(source, staged)
    real_replace = os.replace

    def claim_then_replace(src: Any, dst: Any) -> None:
        if Path(src) == blob:  # the sweeper's rename: a request commits the same bytes first
            registry.store.commit(staged, blob.name)
        real_replace(src, dst)

    cutoff = time.time() - MAX_AGE_S
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", claim_then_replace)
        assert registry.store.remove_orphan(blob.name, cutoff) is False
    assert blob.read_bytes() == source.read_bytes() and not staged.exists()
    assert registry.store.remove_orphan(blob.name, time.time() + 1) is True  # nobody claims
    assert not blob.exists()
