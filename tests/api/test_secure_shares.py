"""Share A of a secure push at the registry: accepted through the resumable uploads as a
``share`` row, idempotent, superseded by the hospital's next share, refused as share B or
from another hospital, and kept out of plain merges; secure merges are refused without a
share holder or below K shares, and the same shares asked for again are one job, queued
again only when it failed."""

from __future__ import annotations

import json
import secrets
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from app.config import Settings
from app.db import make_engine
from app.jobs import DEFERRED_KEY
from app.models import AuditEvent, JobStatus, MergeJob
from app.schema import upgrade
from app.schemas.secure import SecureMergeCreate
from app.security import Actor
from app.services.merges import SECURE_MERGE_TASK
from app.services.secure_merges import request_secure_merge
from app.storage import LocalBlobStore
from medvec.privacy import compose_epsilon
from medvec.secure import write_shares
from medvec.vectors.io import VECTOR_KEY
from tests.api.conftest import (
    MAX_HEADER,
    MIB,
    Hospital,
    Registry,
    _serve,
    make_hospital,
    post_base,
)
from tests.api.factories import ModelKit
from tests.api.helpers import error, resumable_push


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def registry(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_database: Any,
) -> Iterator[Registry]:
    """A registry whose upload limit holds a share (twice a float32 vector's size)."""
    data_dir = tmp_path_factory.mktemp(f"secure-{request.param}")
    database_url = postgres_database() if request.param == "postgres" else None
    settings = Settings(
        environment="test",
        data_dir=data_dir,
        database_url=database_url,
        bootstrap_admin_token="mv_" + secrets.token_urlsafe(32),
        max_upload_bytes=256 * MIB,
        max_header_bytes=MAX_HEADER,
    )
    engine = make_engine(settings.resolved_database_url)
    if database_url:
        upgrade(engine)
    server, thread, url = _serve(settings)
    assert settings.bootstrap_admin_token is not None
    token = settings.bootstrap_admin_token.get_secret_value()
    yield Registry(url, token, settings, engine, LocalBlobStore(data_dir / "blobs"), request.param)
    server.should_exit = True
    thread.join(timeout=30)
    engine.dispose()


@pytest.fixture(scope="module")
def base(registry: Registry, kit: ModelKit) -> dict[str, Any]:
    """On this module's own registry, which the session-scoped shared ``base`` cannot use."""
    return post_base(registry, kit, "secure-test")


def _split(
    kit: ModelKit, hospital: str, folder: Path, privacy: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    stem = secrets.token_hex(4)
    return write_shares(
        kit.tensors,
        kit.metadata(hospital, privacy=privacy or {}),
        folder / f"{stem}-a.safetensors",
        folder / f"{stem}-b.safetensors",
        pair_id=secrets.token_hex(16),
    )


def test_share_a_is_stored_idempotently_and_superseded(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital, tmp_path: Path
) -> None:
    share_a, share_b = _split(kit, hospital.name, tmp_path)
    with registry.client(hospital.token) as client:
        first = resumable_push(client, share_a)
        assert first.status_code == 201, first.text
        row = first.json()
        assert row["status"] == "share" and row["norm"] is None
        assert row["metadata"]["share"]["role"] == "A" and row["base_id"] == base["id"]
        again = resumable_push(client, share_a)
        assert again.status_code == 200 and again.json()["id"] == row["id"]

        newer = resumable_push(client, _split(kit, hospital.name, tmp_path)[0])
        assert newer.status_code == 201, newer.text
        assert client.get(f"/vectors/{row['id']}").json()["status"] == "share_superseded"

        refused = resumable_push(client, share_b)
        assert refused.status_code == 422 and "share B" in error(refused)["message"]


def test_another_hospitals_share_is_refused(
    registry: Registry,
    base: dict[str, Any],
    kit: ModelKit,
    hospital: Hospital,
    other_hospital: Hospital,
    tmp_path: Path,
) -> None:
    share_a, _ = _split(kit, hospital.name, tmp_path)
    before = registry.snapshot()["rows"]["data_vectors"]
    with registry.client(other_hospital.token) as client:
        refused = resumable_push(client, share_a)
    assert refused.status_code == 422 and error(refused)["code"] == "hospital_mismatch"
    assert registry.snapshot()["rows"]["data_vectors"] == before


def test_the_privacy_budget_holds_for_shares_as_for_plain_vectors(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital, tmp_path: Path
) -> None:
    """A share is refused past the budget with the plain push's error, before anything
    is stored; a share within it is accepted and its epsilon is in the ledger."""
    with registry.admin() as admin:
        path = f"/hospitals/{hospital.id}/privacy-budget"
        assert admin.put(path, json={"epsilon": 1, "delta": 1e-5}).status_code == 200
    before = registry.snapshot()
    with registry.client(hospital.token) as client:
        noiseless = resumable_push(client, _split(kit, hospital.name, tmp_path)[0])
        assert noiseless.status_code == 422, noiseless.text
        body = error(noiseless)
        assert body["code"] == "privacy_budget_exceeded"
        assert "no differential-privacy noise" in body["message"]
        assert body["detail"]["budget_epsilon"] == 1
        after = registry.snapshot()  # the upload session stays, as for any refused file
        assert after["rows"]["data_vectors"] == before["rows"]["data_vectors"]
        assert after["blobs"] == before["blobs"]

        noise = {"mechanism": "distributed_gaussian", "dp_clip": 1.0, "dp_noise": 5.0,
                 "secure_k": 3, "noise_std": 5 / 3**0.5, "epsilon": 0.73, "delta": 1e-5,
                 "accountant": "analytic_gaussian"}  # fmt: skip
        noisy = resumable_push(client, _split(kit, hospital.name, tmp_path, noise)[0])
        assert noisy.status_code == 201, noisy.text
        ledger = client.get(f"/hospitals/{hospital.id}/privacy").json()
    assert (ledger["vectors"], ledger["private_vectors"]) == (1, 1)
    # one release of the Gaussian mechanism, through the ledger's RDP accountant
    assert ledger["epsilon"] == compose_epsilon([(5.0, 1.0, 1)], 1e-5) < 1


def test_a_share_with_a_malformed_privacy_record_is_refused(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital, tmp_path: Path
) -> None:
    share_a, _ = _split(kit, hospital.name, tmp_path)
    raw = share_a.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + size])
    meta = json.loads(header["__metadata__"][VECTOR_KEY])
    header["__metadata__"][VECTOR_KEY] = json.dumps({**meta, "privacy": {"delta": "x"}})
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    share_a.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + size :])
    before = registry.snapshot()["rows"]["data_vectors"]
    with registry.client(hospital.token) as client:
        refused = resumable_push(client, share_a)
    assert refused.status_code == 422, refused.text
    assert "privacy.delta" in error(refused)["message"]
    assert registry.snapshot()["rows"]["data_vectors"] == before


def test_shares_never_enter_plain_merges_and_secure_merges_need_the_holder(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital, tmp_path: Path
) -> None:
    with registry.client(hospital.token) as client:
        share = resumable_push(client, _split(kit, hospital.name, tmp_path)[0]).json()
    with registry.admin() as admin:
        plain = admin.post(
            "/merges", json={"base_id": base["id"], "selection": {"vector_ids": [share["id"]]}}
        )
        assert plain.status_code == 422 and "not validated" in error(plain)["message"], plain.text
        secure = admin.post("/secure/merges", json={"base_id": base["id"]})
        # a state of this registry, not of the request: 409, as the API documents
        assert secure.status_code == 409 and "share holder" in error(secure)["message"]


def test_a_secure_merge_is_one_job_and_a_failed_one_is_queued_again(
    registry: Registry, base: dict[str, Any], kit: ModelKit, tmp_path: Path
) -> None:
    """The job is made before the share holder is asked anything: it needs only the
    holder's settings and K shares."""
    settings = registry.settings.model_copy(
        update={"share_holder_url": "http://holder.invalid", "share_holder_token": SecretStr("t")}
    )
    ids = []
    for _ in range(settings.secure_min_set_size):
        hospital = make_hospital(registry, "secure")
        with registry.client(hospital.token) as client:
            ids.append(resumable_push(client, _split(kit, hospital.name, tmp_path)[0]).json()["id"])
    request = SecureMergeCreate(base_id=base["id"], vector_ids=ids, calibration="none")

    def ask(requester: str) -> tuple[str, bool]:
        with registry.session() as session, session.begin():
            job, queued = request_secure_merge(
                session, request, actor=Actor.system(requester), settings=settings
            )
            sent = session.info.pop(DEFERRED_KEY, [])
            assert sent == ([(SECURE_MERGE_TASK, {"job_id": job.id})] if queued else [])
            return job.id, queued

    job_id, queued = ask("first")
    assert queued and ask("second") == (job_id, False)
    with registry.session() as session, session.begin():
        job = session.get(MergeJob, job_id)
        assert job is not None and job.strategy == "secure_weighted_mean"
        job.status, job.error, job.attempts = JobStatus.FAILED, "holder down", 3
    assert ask("third") == (job_id, True)
    with registry.session() as session:
        job = session.get(MergeJob, job_id)
        assert job is not None
        assert (job.status, job.error, job.attempts) == (JobStatus.QUEUED, None, 0)
        assert job.requested_by == "system:first"  # a requeue keeps who asked first
        events = session.scalars(select(AuditEvent).where(AuditEvent.target_id == job_id)).all()
    assert [e.action for e in events] == ["merge.requested", "merge.requested"]
    assert all(e.payload["vector_ids"] == ids for e in events)
