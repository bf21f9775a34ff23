"""Share A of a secure push at the registry: accepted through the resumable uploads as a
``share`` row, idempotent, superseded by the hospital's next share, refused as share B or
from another hospital, and kept out of plain merges; secure merges are refused without a
share holder or below K shares, and the same shares asked for again are one job, queued
again only when it failed. A secure merge takes the public weights the hospitals
pre-scaled their shares by, and refuses a set whose weights could wrap or that mixes
shares pushed before public weights with pre-scaled ones."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sqlalchemy import select

from app.jobs import DEFERRED_KEY
from app.models import AuditEvent, JobStatus, MergeJob
from app.schemas.secure import SecureMergeCreate
from app.security import Actor
from app.services.errors import InvalidInput
from app.services.secure_merges import request_secure_merge
from app.tasks import SecureMergeRun
from medvec.privacy import compose_epsilon
from medvec.secure.encoding import max_total_weight
from medvec.secure.shares import SHARE_KEY
from medvec.vectors.io import VECTOR_KEY
from tests.api.conftest import (
    MIB,
    Hospital,
    Registry,
    make_hospital,
    post_base,
    serve_registry,
)
from tests.api.factories import ModelKit
from tests.api.helpers import error, resumable_push
from tests.scratch import scratch_dir


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def registry(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_database: Any,
) -> Iterator[Registry]:
    """A registry whose upload limit holds a share (twice a float32 vector's size)."""
    database_url = postgres_database() if request.param == "postgres" else None
    with (
        scratch_dir(tmp_path_factory, f"secure-{request.param}") as data_dir,
        serve_registry(
            request.param, data_dir, database_url, max_upload_bytes=256 * MIB
        ) as registry,
    ):
        yield registry


@pytest.fixture(scope="module")
def base(registry: Registry, kit: ModelKit) -> dict[str, Any]:
    """On this module's own registry, which the session-scoped shared ``base`` cannot use."""
    return post_base(registry, kit, "secure-test")


def _as_legacy(share: Path) -> Path:
    """The share as written before public weights: no weight in its header."""
    tensors = load_file(share)
    with safe_open(share, "pt") as handle:
        metadata = dict(handle.metadata())
    info = json.loads(metadata[SHARE_KEY])
    del info["weight"]
    metadata[SHARE_KEY] = json.dumps(info)
    legacy = share.with_name(f"legacy-{share.name}")
    save_file(tensors, legacy, metadata=metadata)
    return legacy


def test_share_a_is_stored_idempotently_and_superseded(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    share_a, share_b = kit.shares(hospital.name)
    with registry.client(hospital.token) as client:
        first = resumable_push(client, share_a)
        assert first.status_code == 201, first.text
        row = first.json()
        assert row["status"] == "share" and row["norm"] is None
        assert row["metadata"]["share"]["role"] == "A" and row["base_id"] == base["id"]
        again = resumable_push(client, share_a)
        assert again.status_code == 200 and again.json()["id"] == row["id"]

        newer = resumable_push(client, kit.shares(hospital.name)[0])
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
) -> None:
    share_a, _ = kit.shares(hospital.name)
    before = registry.snapshot()["rows"]["data_vectors"]
    with registry.client(other_hospital.token) as client:
        refused = resumable_push(client, share_a)
    assert refused.status_code == 422 and error(refused)["code"] == "hospital_mismatch"
    assert registry.snapshot()["rows"]["data_vectors"] == before


def test_the_privacy_budget_holds_for_shares_as_for_plain_vectors(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    """A share is refused past the budget with the plain push's error, before anything
    is stored; a share within it is accepted and its epsilon is in the ledger."""
    with registry.admin() as admin:
        path = f"/hospitals/{hospital.id}/privacy-budget"
        assert admin.put(path, json={"epsilon": 1, "delta": 1e-5}).status_code == 200
    before = registry.snapshot()
    with registry.client(hospital.token) as client:
        noiseless = resumable_push(client, kit.shares(hospital.name)[0])
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
        noisy = resumable_push(client, kit.shares(hospital.name, privacy=noise)[0])
        assert noisy.status_code == 201, noisy.text
        ledger = client.get(f"/hospitals/{hospital.id}/privacy").json()
    assert (ledger["vectors"], ledger["private_vectors"]) == (1, 1)
    # one release of the Gaussian mechanism, through the ledger's RDP accountant
    assert ledger["epsilon"] == compose_epsilon([(5.0, 1.0, 1)], 1e-5) < 1


def test_a_share_with_a_malformed_privacy_record_is_refused(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    share_a, _ = kit.shares(hospital.name)
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
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    with registry.client(hospital.token) as client:
        share = resumable_push(client, kit.shares(hospital.name)[0]).json()
    with registry.admin() as admin:
        plain = admin.post(
            "/merges", json={"base_id": base["id"], "selection": {"vector_ids": [share["id"]]}}
        )
        assert plain.status_code == 422 and "not validated" in error(plain)["message"], plain.text
        secure = admin.post("/secure/merges", json={"base_id": base["id"]})
        # a state of this registry, not of the request: 409, as the API documents
        assert secure.status_code == 409 and "share holder" in error(secure)["message"]


def test_a_secure_merge_is_one_job_and_a_failed_one_is_queued_again(
    registry: Registry, base: dict[str, Any], kit: ModelKit
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
            ids.append(resumable_push(client, kit.shares(hospital.name)[0]).json()["id"])
    request = SecureMergeCreate(base_id=base["id"], vector_ids=ids, calibration="none")

    def ask(requester: str) -> tuple[str, bool]:
        with registry.session() as session, session.begin():
            job, queued = request_secure_merge(
                session, request, actor=Actor.system(requester), settings=settings
            )
            sent = session.info.pop(DEFERRED_KEY, [])
            assert sent == ([(SecureMergeRun.name, {"job_id": job.id})] if queued else [])
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


def test_a_secure_merge_takes_the_public_weights_and_refuses_mixing_or_wrapping(
    registry: Registry, base: dict[str, Any], kit: ModelKit
) -> None:
    settings = registry.settings.model_copy(
        update={"share_holder_url": "http://holder.invalid", "share_holder_token": SecretStr("t")}
    )
    weights = [5, 7, 11]
    ids, legacy_ids = [], []
    for weight in weights:
        hospital = make_hospital(registry, "weights")
        share_a, _ = kit.shares(hospital.name, weight)
        with registry.client(hospital.token) as client:
            ids.append(resumable_push(client, share_a).json()["id"])
            legacy = resumable_push(client, _as_legacy(share_a))
            assert legacy.status_code == 201, legacy.text
            legacy_ids.append(legacy.json()["id"])

    def ask(vector_ids: list[str], update: dict[str, Any] | None = None) -> MergeJob:
        request = SecureMergeCreate(base_id=base["id"], vector_ids=vector_ids, calibration="none")
        with registry.session() as session, session.begin():
            job, _ = request_secure_merge(
                session,
                request,
                actor=Actor.system("weights"),
                settings=settings.model_copy(update=update or {}),
            )
            session.info.pop(DEFERRED_KEY, None)
            return job

    job = ask(ids)
    assert [i["weight"] for i in job.selection["inputs"]] == weights
    assert [i["weight"] for i in ask(legacy_ids).selection["inputs"]] == [1, 1, 1]
    with pytest.raises(InvalidInput, match="before public weights") as mixed:
        ask([ids[0], ids[1], legacy_ids[2]])
    assert mixed.value.detail == {"vector_ids": [legacy_ids[2]]}
    norm = 2.0**63 / (2.0**24 * 20)  # a bound at which the weights may sum to 19 at most
    assert max_total_weight(norm) == 19
    with pytest.raises(InvalidInput, match="could wrap") as wrapping:
        ask(ids, {"max_vector_norm": norm})
    assert wrapping.value.detail == {"total_weight": 23, "limit": 19}
