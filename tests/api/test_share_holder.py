"""The share holder's API: tokens and roles, resumable share uploads, and the sums it
releases or refuses (set below K, differencing set, replayed request) in-process; the
weighted-sum attack of issue 22 and every small weight vector refused over real HTTP."""

from __future__ import annotations

import hashlib
import itertools
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from aggregator.config import AggregatorSettings
from aggregator.main import create_app
from medvec.secure import decode_sum_to_vector, sum_shares, write_shares
from medvec.secure.shares import read_sum_info
from medvec.vectors import VectorMetadata, load_vector
from tests.api.conftest import serve_app

API = "/api/v1"


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    admin = "mv_" + secrets.token_urlsafe(32)
    settings = AggregatorSettings(
        data_dir=tmp_path / "holder", bootstrap_admin_token=admin, min_set_size=3
    )
    with TestClient(create_app(settings)) as client:
        yield client, admin


@pytest.fixture
def live_holder(tmp_path: Path) -> Iterator[tuple[httpx.Client, str]]:
    """The share holder served by uvicorn on a loopback port, and an HTTP client to it."""
    admin = "mv_" + secrets.token_urlsafe(32)
    settings = AggregatorSettings(
        data_dir=tmp_path / "live-holder", bootstrap_admin_token=admin, min_set_size=3
    )
    server, thread, url = serve_app(create_app(settings), "the share holder")
    try:
        with httpx.Client(base_url=url, timeout=60.0) as client:
            yield client, admin
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_holder(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_database: Any
) -> Iterator[tuple[TestClient, str]]:
    """The share holder on its embedded SQLite default or on PostgreSQL."""
    admin = "mv_" + secrets.token_urlsafe(32)
    settings = AggregatorSettings(
        data_dir=tmp_path / "holder",
        database_url=postgres_database() if request.param == "postgres" else None,
        bootstrap_admin_token=admin,
    )
    with TestClient(create_app(settings)) as client:
        yield client, admin


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _mint(client: httpx.Client, admin: str, name: str, role: str) -> str:
    answer = client.post(f"{API}/tokens", json={"name": name, "role": role}, headers=_auth(admin))
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def _tensors(pair_id: str) -> dict[str, torch.Tensor]:
    """The vector a pair's shares encode (seeded by the pair id)."""
    generator = torch.Generator().manual_seed(int(pair_id[:8], 16))
    return {
        "w": torch.randn(64, 32, generator=generator),
        "b": torch.randn(32, generator=generator),
    }


def _shares(
    folder: Path, hospital: str, pair_id: str, base_sha256: str = "1" * 64, weight: int = 3
) -> tuple[Path, Path]:
    """Shares of ``weight * _tensors(pair_id)`` (weight: the sample count, as by default)."""
    meta = VectorMetadata(
        base_id="b", base_sha256=base_sha256, hospital=hospital, num_samples=weight
    )
    tensors = _tensors(pair_id)
    return write_shares(tensors, meta, folder / "a", folder / "b", pair_id=pair_id, weight=weight)


def _upload(client: httpx.Client, token: str, path: Path, part: int = 4096) -> dict[str, object]:
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    started = client.post(
        f"{API}/uploads", json={"sha256": sha, "size": len(data)}, headers=_auth(token)
    )
    assert started.status_code in (200, 201), started.text
    upload = started.json()
    offset = int(upload["offset"])
    while offset < len(data) and upload["vector_id"] is None:
        sent = client.put(
            f"{API}/uploads/{upload['id']}",
            params={"offset": offset},
            content=data[offset : offset + part],
            headers=_auth(token),
        )
        assert sent.status_code == 200, sent.text
        offset = int(sent.json()["offset"])
    done = client.post(f"{API}/uploads/{upload['id']}/complete", headers=_auth(token))
    assert done.status_code in (200, 201), done.text
    return dict(done.json())


def _push(client: httpx.Client, admin: str, tmp_path: Path, count: int = 4) -> list[str]:
    """Hospitals 0, 1, ... push share B of vectors pre-scaled by weights 2, 3, ...; their
    pair ids (each share A stays in ``tmp_path / hospital-n / a``, as at the registry)."""
    pairs = []
    for n in range(count):
        name = f"hospital-{n}"
        token = _mint(client, admin, name, "hospital")
        folder = tmp_path / name
        folder.mkdir()
        pair = f"{n + 1:032x}"
        _, share_b = _shares(folder, name, pair, weight=n + 2)
        assert _upload(client, token, share_b)["pair_id"] == pair
        pairs.append(pair)
    return pairs


def test_share_upload_is_resumable_idempotent_and_checked(
    holder: tuple[TestClient, str], tmp_path: Path
) -> None:
    client, admin = holder
    token = _mint(client, admin, "hospital-a", "hospital")
    share_a, share_b = _shares(tmp_path, "hospital-a", "a" * 32)
    first = _upload(client, token, share_b, part=1000)
    again = _upload(client, token, share_b)
    assert again["id"] == first["id"] and first["hospital"] == "hospital-a"
    wrong_role = _upload_status(client, token, share_a)
    assert wrong_role == (422, "invalid_input")
    other = _mint(client, admin, "hospital-b", "hospital")
    assert _upload_status(client, other, share_b) == (422, "invalid_input")  # not its share
    assert client.get(f"{API}/shares/{first['id']}", headers=_auth(other)).status_code == 404
    registry = _mint(client, admin, "registry", "registry")
    assert (
        client.post(
            f"{API}/uploads", json={"sha256": "0" * 64, "size": 1}, headers=_auth(registry)
        ).status_code
        == 403
    )


def _upload_status(client: TestClient, token: str, path: Path) -> tuple[int, str | None]:
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    upload = client.post(
        f"{API}/uploads", json={"sha256": sha, "size": len(data)}, headers=_auth(token)
    ).json()
    if upload["vector_id"] is None:
        client.put(
            f"{API}/uploads/{upload['id']}",
            params={"offset": 0},
            content=data,
            headers=_auth(token),
        )
    done = client.post(f"{API}/uploads/{upload['id']}/complete", headers=_auth(token))
    return done.status_code, done.json().get("code")


def test_sums_release_safe_sets_only_and_log_them(
    holder: tuple[TestClient, str], tmp_path: Path
) -> None:
    client, admin = holder
    pairs = _push(client, admin, tmp_path)
    registry = _auth(_mint(client, admin, "registry", "registry"))
    hospital = _auth(_mint(client, admin, "hospital-x", "hospital"))
    abc = pairs[:3]

    small = client.post(
        f"{API}/sums", json={"request_id": "r0", "members": abc[:2]}, headers=registry
    )
    assert small.status_code == 403 and small.json()["code"] == "set_too_small"
    assert (
        client.post(
            f"{API}/sums", json={"request_id": "r1", "members": abc}, headers=hospital
        ).status_code
        == 403
    )

    released = client.post(
        f"{API}/sums", json={"request_id": "r1", "members": abc}, headers=registry
    )
    assert released.status_code == 200, released.text
    out = tmp_path / "sum"
    out.write_bytes(released.content)
    assert read_sum_info(out).members == abc and read_sum_info(out).weight == 2 + 3 + 4
    assert hashlib.sha256(released.content).hexdigest() == released.headers["X-Content-SHA256"]

    replay = client.post(f"{API}/sums", json={"request_id": "r1", "members": abc}, headers=registry)
    assert replay.status_code == 200 and replay.content == released.content
    changed = client.post(
        f"{API}/sums", json={"request_id": "r1", "members": pairs}, headers=registry
    )
    assert changed.status_code == 409

    leak = client.post(f"{API}/sums", json={"request_id": "r2", "members": pairs}, headers=registry)
    assert leak.status_code == 403 and leak.json()["code"] == "differencing_set"
    assert leak.json()["detail"]["exposed"] == ["hospital-3"]  # the guard names hospitals
    unknown = client.post(
        f"{API}/sums", json={"request_id": "r3", "members": ["f" * 32, *abc]}, headers=registry
    )
    assert unknown.status_code == 404

    other_base = tmp_path / "other-base"
    other_base.mkdir()
    token = _mint(client, admin, "hospital-z", "hospital")
    _upload(client, token, _shares(other_base, "hospital-z", "e" * 32, "2" * 64)[1])
    mixed = [pairs[0], pairs[1], "e" * 32]
    refused = client.post(
        f"{API}/sums", json={"request_id": "r4", "members": mixed}, headers=registry
    )
    assert refused.status_code == 422 and "different bases" in refused.json()["message"]

    listed = client.get(f"{API}/sums", headers=registry).json()
    assert [s["request_id"] for s in listed] == ["r1"]
    actions = [e["action"] for e in client.get(f"{API}/audit", headers=_auth(admin)).json()]
    assert actions.count("sum.released") == 1 and actions.count("share.stored") == 5


def test_a_hospitals_new_share_cannot_move_a_released_sum_and_moved_sums_are_exact(
    holder: tuple[TestClient, str], tmp_path: Path
) -> None:
    client, admin = holder
    pairs = _push(client, admin, tmp_path)
    registry = _auth(_mint(client, admin, "registry", "registry"))
    # hospital-2 pushes again: a new pair id whose share B supersedes its first one
    token = _mint(client, admin, "hospital-2", "hospital")
    again = tmp_path / "hospital-2-again"
    again.mkdir()
    new_pair = "9" * 32
    _upload(client, token, _shares(again, "hospital-2", new_pair)[1])

    first = dict.fromkeys(pairs[:3], 1)  # the earlier form of a request: every weight 1
    assert client.post(
        f"{API}/sums", json={"request_id": "r1", "members": first}, headers=registry
    ).is_success
    # {h0, h1, h2_new} after {h0, h1, h2_old} would reveal hospital-2's change alone
    moved_by_one = [pairs[0], pairs[1], new_pair]
    refused = client.post(
        f"{API}/sums", json={"request_id": "r2", "members": moved_by_one}, headers=registry
    )
    assert refused.status_code == 403 and refused.json()["code"] == "differencing_set"
    assert refused.json()["detail"]["exposed"] == ["hospital-2"]

    # two hospitals changed (hospital-2's update and hospital-3 joining): released, and
    # computed by moving the running sum, byte for byte the sum from scratch
    moved_by_two = [*moved_by_one, pairs[3]]
    released = client.post(
        f"{API}/sums", json={"request_id": "r3", "members": moved_by_two}, headers=registry
    )
    assert released.status_code == 200, released.text
    paths = {p: tmp_path / f"hospital-{n}" / "b" for n, p in enumerate(pairs)}
    paths[new_pair] = again / "b"
    digest = sum_shares([paths[m] for m in sorted(moved_by_two)], tmp_path / "scratch")
    assert released.headers["X-Content-SHA256"] == digest


def test_migrations_build_exactly_the_models(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from aggregator.models import AggBase
    from aggregator.schema import upgrade
    from app.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'holder.db'}")
    upgrade(engine)
    upgrade(engine)  # idempotent at head
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, AggBase.metadata)
    engine.dispose()
    assert [
        d for d in diff if d[0] != "remove_table" or d[1].name != "aggregator_alembic_version"
    ] == []


def test_idle_uploads_expire_and_lose_their_bytes(
    holder: tuple[TestClient, str], tmp_path: Path
) -> None:
    from sqlalchemy import update

    from aggregator.main import sweep_uploads
    from aggregator.models import AggUpload

    client, admin = holder
    token = _mint(client, admin, "hospital-a", "hospital")
    _, share_b = _shares(tmp_path, "hospital-a", "c" * 32)
    data = share_b.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    upload = client.post(
        f"{API}/uploads", json={"sha256": sha, "size": len(data)}, headers=_auth(token)
    ).json()
    part = client.put(
        f"{API}/uploads/{upload['id']}",
        params={"offset": 0},
        content=data[:1000],
        headers=_auth(token),
    )
    assert part.json()["offset"] == 1000
    state = client.app.state  # type: ignore[attr-defined]
    with state.sessionmaker.begin() as session:
        session.execute(
            update(AggUpload)
            .values(expires_at=AggUpload.created_at)
            .where(AggUpload.id == upload["id"])
        )
    assert sweep_uploads(state.sessionmaker, state.store) == 1
    assert state.store.uploads.held(upload["id"]) == 0
    gone = client.get(f"{API}/uploads/{upload['id']}", headers=_auth(token))
    assert gone.status_code == 410


@pytest.mark.parametrize("size", ["10", True, 10.5])
def test_an_upload_size_is_a_json_integer(holder: tuple[TestClient, str], size: object) -> None:
    """Not a string, a boolean or a fraction: pydantic's lax mode would read the first two
    as 10 and 1 (``10.0`` is an integer to JSON Schema, and taken)."""
    client, admin = holder
    token = _mint(client, admin, "hospital-a", "hospital")
    body = {"sha256": "0" * 64, "size": size}
    answer = client.post(f"{API}/uploads", json=body, headers=_auth(token))
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "invalid_request" and "size" in answer.json()["message"]


def test_the_weighted_sum_attack_of_issue_22_is_refused_and_leaves_no_trace(
    live_holder: tuple[httpx.Client, str], tmp_path: Path
) -> None:
    """h1, h2, h3 push; the registry asks for {h1: 1, h2: 2^40, h3: 2^40}. Answered 200
    before issue 22: adding h1's share A, which the registry stores, and reading the result
    modulo 2^40 gave h1's vector. Now refused, not recorded, and the plain sum over the
    same three (which the forged release would have blocked) is released and decodes to
    the weighted mean of the pre-scaled vectors."""
    client, admin = live_holder
    pairs = _push(client, admin, tmp_path, count=3)
    registry = _auth(_mint(client, admin, "registry", "registry"))
    forged = {pairs[0]: 1, pairs[1]: 1 << 40, pairs[2]: 1 << 40}
    attack = client.post(
        f"{API}/sums", json={"request_id": "attack", "members": forged}, headers=registry
    )
    assert attack.status_code == 422, attack.text
    assert attack.json()["code"] == "weights_not_allowed"
    assert attack.json()["detail"]["members"] == sorted(pairs[1:])
    assert client.get(f"{API}/sums", headers=registry).json() == []
    log = client.get(f"{API}/audit", headers=_auth(admin)).json()
    assert "sum.released" not in [e["action"] for e in log]

    merge = client.post(
        f"{API}/sums", json={"request_id": "merge", "members": pairs}, headers=registry
    )
    assert merge.status_code == 200, merge.text
    (tmp_path / "sum-b").write_bytes(merge.content)
    weights = [2, 3, 4]
    assert read_sum_info(tmp_path / "sum-b").weight == sum(weights)
    sum_shares([tmp_path / f"hospital-{n}" / "a" for n in range(3)], tmp_path / "sum-a")
    meta = VectorMetadata(base_id="b", base_sha256="1" * 64, hospital="sum", num_samples=9)
    out = tmp_path / "mean"
    decode_sum_to_vector(tmp_path / "sum-a", tmp_path / "sum-b", out, meta, 1 / sum(weights))
    mean, _ = load_vector(out)
    for name in ("w", "b"):
        expected = sum(w * _tensors(p)[name] for w, p in zip(weights, pairs, strict=True)) / 9
        assert float((mean[name] - expected).abs().max()) < 1e-6


def test_every_small_weight_vector_but_the_plain_sum_is_refused(
    live_holder: tuple[httpx.Client, str], tmp_path: Path
) -> None:
    """Any unequal integer weights expose each vector modulo some number ((1, 2, 2): its
    lowest bit), and equal ones other than 1 are no plain sum: every weight vector in
    {0..3}^3 but (1, 1, 1) is refused, and so is a pair id listed twice."""
    client, admin = live_holder
    pairs = _push(client, admin, tmp_path, count=3)
    registry = _auth(_mint(client, admin, "registry", "registry"))
    for n, weights in enumerate(itertools.product(range(4), repeat=3)):
        if weights == (1, 1, 1):
            continue
        members = dict(zip(pairs, weights, strict=True))
        answer = client.post(
            f"{API}/sums", json={"request_id": f"w{n}", "members": members}, headers=registry
        )
        assert answer.status_code == 422, (weights, answer.text)
        assert answer.json()["code"] == "weights_not_allowed", weights
    as_booleans = dict.fromkeys(pairs, True)  # lax pydantic would read true as the weight 1
    lax = client.post(
        f"{API}/sums", json={"request_id": "bool", "members": as_booleans}, headers=registry
    )
    assert lax.status_code == 422, lax.text
    twice = client.post(
        f"{API}/sums", json={"request_id": "twice", "members": [*pairs, pairs[0]]}, headers=registry
    )
    assert twice.status_code == 422 and twice.json()["code"] == "weights_not_allowed"
    assert client.get(f"{API}/sums", headers=registry).json() == []
    plain = client.post(
        f"{API}/sums", json={"request_id": "plain", "members": pairs}, headers=registry
    )
    assert plain.status_code == 200, plain.text


def test_the_audit_limit_is_bounded(holder: tuple[TestClient, str]) -> None:
    """A limit past 64 bits failed in the database (500), a negative one too on PostgreSQL."""
    client, admin = holder
    for limit in (0, -1, 10**30):
        answer = client.get(f"{API}/audit", params={"limit": limit}, headers=_auth(admin))
        assert answer.status_code == 422, (limit, answer.text)
        assert answer.json()["code"] == "invalid_request"


ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


def test_the_openapi_document_says_what_each_operation_answers(
    holder: tuple[TestClient, str],
) -> None:
    """What the schemathesis run (tests/fuzz) found undocumented: every error status, the
    error body, the 200 of a resumed or repeated upload, the raw part body, the binary sum."""
    client, _ = holder
    document = client.get("/openapi.json").json()
    paths = document["paths"]

    def answers(path: str, method: str) -> dict[str, Any]:
        return dict(paths[f"{API}{path}"][method]["responses"])

    for path, item in paths.items():
        for method, operation in item.items():
            statuses = operation["responses"]
            if path.startswith(API):
                assert {"401", "403"} <= set(statuses), (method, path)
            for status, answer in statuses.items():
                if int(status) >= 400:
                    assert answer["content"]["application/json"]["schema"] == ERROR_BODY
    assert {"200", "201", "413", "422"} <= set(answers("/uploads", "post"))
    assert {"404", "409", "410", "413", "422"} <= set(answers("/uploads/{upload_id}", "put"))
    part = paths[f"{API}/uploads/{{upload_id}}"]["put"]["requestBody"]
    assert part["required"] and set(part["content"]) == {"application/octet-stream"}
    complete = answers("/uploads/{upload_id}/complete", "post")
    assert {"200", "201", "404", "409", "410", "422"} <= set(complete)
    assert "404" in answers("/shares/{share_id}", "get")
    released = answers("/sums", "post")
    assert {"403", "404", "409", "422"} <= set(released)
    assert set(released["200"]["content"]) == {"application/octet-stream"}
    upload = document["components"]["schemas"]["UploadCreate"]["properties"]
    assert upload["sha256"]["pattern"] == "^[0-9a-fA-F]{64}$"
    assert upload["size"]["exclusiveMinimum"] == 0


def test_nul_in_any_request_text_is_422(any_holder: tuple[TestClient, str]) -> None:
    """PostgreSQL text cannot hold NUL: a NUL in a path id, a token name, a request id or
    a member's pair id failed there with a 500 before any check."""
    client, admin = any_holder
    hospital = _auth(_mint(client, admin, "hospital-a", "hospital"))
    registry = _auth(_mint(client, admin, "registry", "registry"))
    answers = [
        client.post(
            f"{API}/tokens", json={"name": "a\x00", "role": "hospital"}, headers=_auth(admin)
        ),
        client.get(f"{API}/uploads/a%00", headers=hospital),
        client.put(f"{API}/uploads/a%00", params={"offset": 0}, content=b"x", headers=hospital),
        client.post(f"{API}/uploads/a%00/complete", headers=hospital),
        client.get(f"{API}/shares/a%00", headers=hospital),
        client.post(
            f"{API}/sums", json={"request_id": "r\x00", "members": {"a" * 32: 1}}, headers=registry
        ),
        client.post(
            f"{API}/sums", json={"request_id": "r", "members": {"a\x00": 1}}, headers=registry
        ),
    ]
    for answer in answers:
        assert answer.status_code == 422, (answer.request.url, answer.text)
        assert answer.json()["code"] == "invalid_request"


def test_a_request_id_never_names_a_file(holder: tuple[TestClient, str], tmp_path: Path) -> None:
    """The sum was staged as ``sum-<request_id>.safetensors`` (folders made as needed): an
    id with ``..`` wrote, then deleted, a file outside the staging area; one with ``/``
    left folders in it."""
    client, admin = holder
    pairs = _push(client, admin, tmp_path, count=3)
    registry = _auth(_mint(client, admin, "registry", "registry"))
    store = client.app.state.store  # type: ignore[attr-defined]
    escape, folder = "../../../escaped", "a-folder/x"
    outside = store.staging_path(f"sum-{escape}.safetensors").resolve()
    assert not outside.is_relative_to(store.staging_path().parent)
    outside.write_bytes(b"kept")
    for request_id in (escape, folder):
        body = {"request_id": request_id, "members": dict.fromkeys(pairs[:3], 1)}
        released = client.post(f"{API}/sums", json=body, headers=registry)
        assert released.status_code == 200, released.text
    assert outside.read_bytes() == b"kept"
    assert [p for p in store.staging_path().parent.iterdir() if p.is_dir()] == []
