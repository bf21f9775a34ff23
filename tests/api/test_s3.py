"""The registry on S3 (a real moto server over HTTP): two API replicas that share only the
database and the bucket. Blobs land in the bucket once; resumable parts are S3 parts that
either replica continues; downloads stream from the bucket; nothing of it on local disk."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from app.config import Settings
from app.db import make_engine
from app.models import UploadSession
from app.s3 import S3BlobStore
from medvec.hashing import sha256_file
from tests.api.conftest import (
    MAX_HEADER,
    MAX_NORM,
    MAX_UPLOAD,
    Hospital,
    Registry,
    _serve,
    make_hospital,
    verify,
)
from tests.api.factories import ModelKit
from tests.api.helpers import OCTET, error, push, put_part
from tests.s3server import CREDENTIALS, S3Server

MIB = 1 << 20


@dataclass
class Replicas:
    a: Registry
    b: Registry
    bucket: str
    s3: Any

    def objects(self, prefix: str = "") -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"reg/{prefix}")
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def multiparts(self) -> list[dict[str, Any]]:
        return list(self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []))


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Iterator[Replicas]:
    bucket = s3_server.new_bucket()
    database = tmp_path_factory.mktemp("db") / "registry.db"
    admin_token = "mv_" + secrets.token_urlsafe(32)
    served = []
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CREDENTIALS.items():
            patch.setenv(name, value)
        for replica in ("a", "b"):
            settings = Settings(
                environment="test",
                data_dir=tmp_path_factory.mktemp(f"replica-{replica}"),
                database_url=f"sqlite:///{database}",
                auto_migrate=True,
                bootstrap_admin_token=admin_token,
                max_upload_bytes=MAX_UPLOAD,
                max_header_bytes=MAX_HEADER,
                max_vector_norm=MAX_NORM,
                blob_url=f"s3://{bucket}/reg",
                s3_endpoint_url=s3_server.endpoint_url,
            )
            server, thread, url = _serve(settings)
            engine = make_engine(settings.resolved_database_url)
            store = S3BlobStore.from_settings(settings)
            served.append((server, thread, engine))
            registry = Registry(url, admin_token, settings, engine, store, "s3")  # type: ignore[arg-type]
            if replica == "a":
                first = registry
        yield Replicas(first, registry, bucket, s3_server.client())
        for server, thread, engine in served:
            server.should_exit = True
            thread.join(timeout=30)
            engine.dispose()


@pytest.fixture(scope="module")
def s3_base(replicas: Replicas, kit: ModelKit) -> dict[str, Any]:
    with replicas.a.admin() as admin, kit.base_path.open("rb") as body:
        response = admin.post("/bases", params={"name": "r18-s3"}, content=body, headers=OCTET)
    assert response.status_code == 201, response.text
    assert verify(replicas.a.engine, replicas.a.store, response.json()["id"]) == "ready"
    with replicas.a.admin() as admin:
        return dict(admin.get(f"/bases/{response.json()['id']}").json())


def _local_blobs(registry: Registry) -> list[Path]:
    root = registry.settings.data_dir / "blobs"
    return [p for p in root.rglob("*") if p.is_file() and "staging" not in p.parts]


def test_blobs_are_written_once_to_the_bucket_and_downloads_stream_from_it(
    replicas: Replicas, s3_base: dict[str, Any], kit: ModelKit, tmp_path: Path
) -> None:
    sha = s3_base["sha256"]
    key = f"reg/sha256/{sha[:2]}/{sha[2:4]}/{sha}"
    # the module's other tests (in any order) add their own blobs, never a second copy
    before = replicas.objects("sha256/")
    assert key in before
    first = replicas.s3.head_object(Bucket=replicas.bucket, Key=key)
    assert first["ContentLength"] == kit.base_path.stat().st_size
    for cached in _local_blobs(replicas.b):  # a download by an earlier test of the module
        if cached.name == sha:
            cached.unlink()
    with replicas.b.admin() as admin, kit.base_path.open("rb") as body:
        again = admin.post("/bases", params={"name": "r18-s3"}, content=body, headers=OCTET)
    assert again.status_code == 200, again.text  # the same bytes: the same base
    assert replicas.s3.head_object(Bucket=replicas.bucket, Key=key)["ETag"] == first["ETag"]
    assert replicas.objects("sha256/") == before
    # replica b's disk never held the blob (the module's other tests may have cached theirs)
    assert sha not in {p.name for p in _local_blobs(replicas.b)}

    with replicas.b.admin() as admin:  # b has no copy: it streams from the bucket
        with admin.stream("GET", f"/bases/{s3_base['id']}/download") as response:
            assert response.status_code == 200
            assert int(response.headers["content-length"]) == first["ContentLength"]
            target = tmp_path / "base.safetensors"
            with target.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
    assert sha256_file(target) == response.headers["X-Content-SHA256"] == sha
    assert "attachment" in response.headers["content-disposition"]


def test_resumable_parts_are_s3_parts_that_any_replica_continues(
    replicas: Replicas, s3_base: dict[str, Any], kit: ModelKit
) -> None:
    hospital = make_hospital(replicas.a)
    path = kit.vector(hospital.name)
    size = path.stat().st_size
    assert size > 12 * MIB  # three parts at least
    with replicas.a.client(hospital.token) as a, replicas.b.client(hospital.token) as b:
        started = a.post("/uploads", json={"sha256": sha256_file(path), "size": size})
        assert started.status_code == 201, started.text
        upload_id = started.json()["id"]
        (multipart,) = [u for u in replicas.multiparts() if u["Key"].endswith(upload_id)]

        first = put_part(a, upload_id, path, 0, 6 * MIB)
        assert first.status_code == 200 and first.json()["offset"] == 6 * MIB, first.text
        parts = replicas.s3.list_parts(
            Bucket=replicas.bucket, Key=multipart["Key"], UploadId=multipart["UploadId"]
        )["Parts"]
        assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, 6 * MIB)]

        short = put_part(b, upload_id, path, 6 * MIB, 7 * MIB)  # under S3's 5 MiB, not last
        assert short.status_code == 422
        body = error(short)
        assert body["code"] == "part_too_small"
        assert body["detail"] == {"offset": 6 * MIB, "min_part_size": 5 * MIB}
        assert b.get(f"/uploads/{upload_id}").json()["offset"] == 6 * MIB

        wrong = put_part(b, upload_id, path, 0, 6 * MIB)
        assert wrong.status_code == 409 and error(wrong)["detail"]["offset"] == 6 * MIB

        middle = put_part(b, upload_id, path, 6 * MIB, 12 * MIB)  # the other replica
        assert middle.json()["offset"] == 12 * MIB
        assert a.get(f"/uploads/{upload_id}").json()["offset"] == 12 * MIB
        last = put_part(a, upload_id, path, 12 * MIB, size)  # the last part may be short
        assert last.json()["offset"] == size
        done = b.post(f"/uploads/{upload_id}/complete")
    assert done.status_code == 201, done.text
    sha = done.json()["sha256"]
    assert sha == sha256_file(path)
    assert f"reg/sha256/{sha[:2]}/{sha[2:4]}/{sha}" in replicas.objects("sha256/")
    assert replicas.objects("uploads/") == []  # the assembled object is gone
    assert not [u for u in replicas.multiparts() if u["Key"].endswith(upload_id)]
    for registry in (replicas.a, replicas.b):  # no bytes left behind on either machine
        staging = registry.settings.data_dir / "blobs" / "staging"
        left = {p.name: p.stat().st_size for p in staging.iterdir()}
        # at most the empty lock file of a replica that took parts (the sweeper's to remove)
        assert set(left) <= {f"upload-{upload_id}.part"} and not any(left.values()), left


def test_a_sha256_mismatch_resets_the_session_and_stores_nothing(
    replicas: Replicas, s3_base: dict[str, Any], kit: ModelKit
) -> None:
    hospital: Hospital = make_hospital(replicas.a)
    path = kit.vector(hospital.name)
    size = path.stat().st_size
    before = replicas.objects("sha256/")
    with replicas.a.client(hospital.token) as client:
        started = client.post("/uploads", json={"sha256": "0" * 64, "size": size})
        upload_id = started.json()["id"]
        assert put_part(client, upload_id, path, 0, size).json()["offset"] == size
        refused = client.post(f"/uploads/{upload_id}/complete")
        assert refused.status_code == 422 and error(refused)["code"] == "sha256_mismatch"
        assert client.get(f"/uploads/{upload_id}").json()["offset"] == 0
    assert replicas.objects("sha256/") == before
    assert replicas.objects("uploads/") == []


def test_expired_sessions_abort_their_multipart_upload(
    replicas: Replicas, s3_base: dict[str, Any], kit: ModelKit
) -> None:
    from app.db import make_sessionmaker
    from app.main import sweep_uploads

    hospital = make_hospital(replicas.a)
    path = kit.vector(hospital.name)
    with replicas.a.client(hospital.token) as client:
        started = client.post("/uploads", json={"sha256": sha256_file(path), "size": 20 * MIB})
        upload_id = started.json()["id"]
        assert put_part(client, upload_id, path, 0, 5 * MIB).json()["offset"] == 5 * MIB
    assert [u for u in replicas.multiparts() if u["Key"].endswith(upload_id)]
    with replicas.a.engine.begin() as connection:
        connection.execute(
            update(UploadSession)
            .where(UploadSession.id == upload_id)
            .values(expires_at=UploadSession.created_at)
        )
    assert sweep_uploads(make_sessionmaker(replicas.a.engine), replicas.a.store) == 1
    assert not [u for u in replicas.multiparts() if u["Key"].endswith(upload_id)]


def test_one_shot_push_and_readiness_on_s3(
    replicas: Replicas, s3_base: dict[str, Any], kit: ModelKit
) -> None:
    hospital = make_hospital(replicas.b)
    path = kit.vector(hospital.name)
    with replicas.b.client(hospital.token) as client:
        pushed = push(client, path)
    assert pushed.status_code == 201, pushed.text
    sha = pushed.json()["sha256"]
    assert f"reg/sha256/{sha[:2]}/{sha[2:4]}/{sha}" in replicas.objects("sha256/")
    ready = replicas.a.client().get(replicas.a.url + "/readyz")
    assert ready.status_code == 200, ready.text
