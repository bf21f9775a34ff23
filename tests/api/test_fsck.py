"""``medvec-server fsck`` on a live test registry of the module's own (SQLite and
PostgreSQL) holding real stored vectors: clean is exit 0; each kind of damage, made by
hand on the blob store and put back afterwards, is reported by name with exit 1."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select
from typer.testing import Result

from app.models import DataVector, ModelVersion, VersionStatus
from medvec.hashing import sha256_file
from tests.api.conftest import Hospital, Registry, registry_of_the_module
from tests.api.factories import ModelKit
from tests.api.helpers import push, server_cli

pytestmark = pytest.mark.databases  # SQLite and PostgreSQL


def run_fsck(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path, database_url: str | None, *args: str
) -> Result:
    """``medvec-server fsck ARGS`` with the registry's settings in the environment."""
    return server_cli(monkeypatch, data_dir, database_url, "fsck", *args)


# fsck judges every row and blob stored, and the shared registry holds what other
# modules' tests made on purpose (a version without inputs, orphan blobs)
registry, base = registry_of_the_module("fsck")


@pytest.fixture()
def fsck_text(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``medvec-server fsck ARGS`` on the registry: the CLI result."""
    settings = registry.settings
    return lambda *args: run_fsck(monkeypatch, settings.data_dir, settings.database_url, *args)


@pytest.fixture()
def fsck(fsck_text: Any) -> Any:
    """``medvec-server fsck --json ARGS`` on the registry: (exit code, report)."""

    def invoke(*args: str) -> tuple[int, dict[str, Any]]:
        result = fsck_text("--json", *args)
        assert result.exit_code in (0, 1), result.output
        return result.exit_code, json.loads(result.stdout)

    return invoke


@pytest.fixture()
def stored(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> Iterator[tuple[str, Path]]:
    """A freshly accepted vector: its id and its blob's path (restored after the test)."""
    vector = kit.vector(hospital.name, scale=1.0 + int.from_bytes(os.urandom(2)) / 1e5)
    with registry.client(hospital.token) as client:
        response = push(client, vector)
    assert response.status_code == 201, response.text
    blob = registry.store.local_path(response.json()["sha256"])
    original = vector.read_bytes()
    yield response.json()["id"], blob
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists() or blob.read_bytes() != original:
        blob.write_bytes(original)


def kinds(report: dict[str, Any], key: str = "problems") -> list[str]:
    return [finding["kind"] for finding in report[key]]


def test_a_clean_registry_passes(fsck: Any, stored: tuple[str, Path]) -> None:
    code, report = fsck("--verify-hashes")
    assert (code, report["problems"]) == (0, []), report["problems"]
    assert report["ok"] is True
    assert report["checked"]["blobs"] >= 2 and report["checked"]["hashed"] >= 2
    assert report["checked"]["rows"] >= report["checked"]["blobs"]


def test_a_deleted_blob_is_reported(fsck: Any, stored: tuple[str, Path]) -> None:
    vector_id, blob = stored
    blob.unlink()
    code, report = fsck()
    assert code == 1 and report["ok"] is False
    assert kinds(report) == ["missing_blob"]
    assert report["problems"][0]["sha256"] == blob.name
    assert report["problems"][0]["rows"] == [f"data_vectors:{vector_id}"]


def test_an_orphan_blob_is_reported_once_past_the_grace(
    fsck: Any, registry: Registry, kit: ModelKit
) -> None:
    orphan = kit.raw(os.urandom(1000), "orphan")
    digest = sha256_file(orphan)
    staged = registry.store.staging_path()
    shutil.copy(orphan, staged)
    registry.store.commit(staged, digest)
    try:
        code, report = fsck()  # just stored: its row may be committing
        assert (code, kinds(report)) == (0, [])
        assert [f["sha256"] for f in report["notes"] if f["kind"] == "recent_blob"] == [digest]

        code, report = fsck("--grace", "0")
        assert code == 1
        assert [(f["kind"], f["sha256"]) for f in report["problems"]] == [("orphan_blob", digest)]
    finally:
        registry.store.delete(digest)


def test_a_corrupted_blob_is_found_by_its_hash(fsck: Any, stored: tuple[str, Path]) -> None:
    vector_id, blob = stored
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit pattern, same size
    blob.write_bytes(bytes(data))

    code, report = fsck()  # sizes alone cannot see it
    assert (code, kinds(report)) == (0, [])
    code, report = fsck("--verify-hashes")
    assert code == 1 and kinds(report) == ["hash_mismatch"]
    assert report["problems"][0]["rows"] == [f"data_vectors:{vector_id}"]


def test_a_truncated_blob_is_a_size_mismatch(fsck: Any, stored: tuple[str, Path]) -> None:
    vector_id, blob = stored
    blob.write_bytes(blob.read_bytes()[:-10])
    code, report = fsck()
    assert code == 1 and kinds(report) == ["size_mismatch"]
    assert report["problems"][0]["rows"] == [f"data_vectors:{vector_id}"]


def test_a_version_without_inputs_is_reported(
    fsck: Any, registry: Registry, stored: tuple[str, Path]
) -> None:
    vector_id, blob = stored
    with registry.session() as session:
        vector = session.get(DataVector, vector_id)
        assert vector is not None
        orphaned = ModelVersion(
            base_id=vector.base_id,
            strategy="weighted_mean",
            params={},
            sha256=vector.sha256,
            size=vector.size,
            status=VersionStatus.CANDIDATE,
        )
        session.add(orphaned)
        session.commit()
    try:
        code, report = fsck()
        assert code == 1 and kinds(report) == ["version_without_inputs"]
        assert report["problems"][0]["rows"] == [f"model_versions:{orphaned.id}"]
    finally:
        with registry.session() as session:
            session.execute(delete(ModelVersion).where(ModelVersion.id == orphaned.id))
            session.commit()


def test_a_staging_leftover_is_a_note_not_a_problem(fsck: Any, registry: Registry) -> None:
    leftover = registry.store.staging_path()
    leftover.write_bytes(b"cut off mid-body")
    try:
        code, report = fsck()
        assert (code, kinds(report)) == (0, [])
        notes = [f["message"] for f in report["notes"] if f["kind"] == "staging_leftover"]
        assert any(leftover.name in message for message in notes)
    finally:
        leftover.unlink()


def test_the_text_report_says_what_is_wrong(fsck_text: Any, stored: tuple[str, Path]) -> None:
    _, blob = stored
    blob.unlink()
    result = fsck_text()
    assert result.exit_code == 1
    assert f"PROBLEM missing_blob: no blob {blob.name}" in result.stdout
    assert result.stdout.rstrip().endswith("1 problem(s)")


def test_fsck_refuses_a_data_dir_without_a_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_fsck(monkeypatch, tmp_path / "nothing", None)
    assert result.exit_code == 2
    assert "fsck: no registry in" in result.output
    assert not (tmp_path / "nothing").exists()


def test_fsck_writes_nothing(fsck: Any, registry: Registry, stored: tuple[str, Path]) -> None:
    before = registry.snapshot()
    with registry.session() as session:
        statuses = list(session.scalars(select(DataVector.status).order_by(DataVector.id)))
    fsck("--verify-hashes")
    assert registry.snapshot() == before
    with registry.session() as session:
        assert list(session.scalars(select(DataVector.status).order_by(DataVector.id))) == statuses


@pytest.mark.postgres
def test_fsck_refuses_a_database_not_at_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_database: Any
) -> None:
    result = run_fsck(monkeypatch, tmp_path, postgres_database())
    assert result.exit_code == 2
    assert "medvec-server migrate" in result.output
