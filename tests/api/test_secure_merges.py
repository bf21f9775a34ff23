"""What a registry with a share holder refuses before it queues a secure merge: a removed
hospital's share, an id named twice or empty, fewer than K hospitals (two shares of one
hospital count once); and the requests docs/secure-aggregation.md shows, run with curl."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aggregator.config import AggregatorSettings
from aggregator.main import create_app as create_share_holder
from tests.api.conftest import (
    MIB,
    Hospital,
    Registry,
    make_hospital,
    post_base,
    serve_app,
    serve_registry,
)
from tests.api.factories import ModelKit
from tests.api.helpers import error, resumable_push
from tests.scratch import scratch_dir

ROOT = Path(__file__).resolve().parents[2]
SECURE_DOC = ROOT / "docs" / "secure-aggregation.md"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.fixture(scope="module")
def share_holder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A live share holder (in-process, on a loopback port): its URL and a registry token."""
    admin = "mv_" + secrets.token_urlsafe(32)
    settings = AggregatorSettings(
        data_dir=tmp_path_factory.mktemp("share-holder"), bootstrap_admin_token=admin
    )
    server, thread, url = serve_app(create_share_holder(settings), "the share holder")
    minted = httpx.post(
        f"{url}/api/v1/tokens",
        json={"name": "registry", "role": "registry"},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=30,
    )
    assert minted.status_code == 201, minted.text
    yield url, minted.json()["token"]
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def registry(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_database: Any,
    share_holder: tuple[str, str],
) -> Iterator[Registry]:
    """A registry configured with the share holder, whose upload limit holds a share."""
    database_url = postgres_database() if request.param == "postgres" else None
    holder_url, holder_token = share_holder
    with (
        scratch_dir(tmp_path_factory, f"secure-merges-{request.param}") as data_dir,
        serve_registry(
            request.param,
            data_dir,
            database_url,
            max_upload_bytes=256 * MIB,
            share_holder_url=holder_url,
            share_holder_token=holder_token,
        ) as registry,
    ):
        yield registry


@pytest.fixture(scope="module")
def base(registry: Registry, kit: ModelKit) -> dict[str, Any]:
    """The registry's only base, so the current one."""
    return post_base(registry, kit, "secure-merges")


def _push_share(registry: Registry, kit: ModelKit, hospital: Hospital) -> str:
    with registry.client(hospital.token) as client:
        pushed = resumable_push(client, kit.shares(hospital.name)[0])
    assert pushed.status_code == 201, pushed.text
    return str(pushed.json()["id"])


@pytest.fixture(scope="module")
def shares(registry: Registry, base: dict[str, Any], kit: ModelKit) -> list[str]:
    """Three hospitals' current shares for the base."""
    return [_push_share(registry, kit, make_hospital(registry, "secure")) for _ in range(3)]


def _refused(registry: Registry, body: dict[str, Any]) -> dict[str, Any]:
    """The error of a secure merge request answered 422, which changed nothing stored."""
    before = registry.snapshot()
    with registry.admin() as admin:
        answer = admin.post("/secure/merges", json=body)
    assert answer.status_code == 422, answer.text
    assert registry.snapshot() == before
    return error(answer)


def test_a_removed_hospitals_share_is_refused_and_left_out_by_default(
    registry: Registry, base: dict[str, Any], kit: ModelKit, shares: list[str]
) -> None:
    removed = make_hospital(registry, "removed")
    share = _push_share(registry, kit, removed)
    with registry.admin() as admin:
        assert admin.delete(f"/hospitals/{removed.id}").status_code == 200

    refused = _refused(registry, {"vector_ids": [*shares[:2], share]})
    assert "removed hospital" in refused["message"] and share in refused["message"]

    with registry.admin() as admin:
        accepted = admin.post("/secure/merges", json={"base_id": base["id"]})
        assert accepted.status_code == 202, accepted.text
        job = admin.get(f"/merges/{accepted.json()['job_id']}").json()
    members = {i["vector_id"] for i in job["selection"]["inputs"]}
    assert set(shares) <= members and share not in members


def test_an_id_named_twice_is_refused(registry: Registry, shares: list[str]) -> None:
    refused = _refused(registry, {"vector_ids": [shares[0]] * 3})
    assert refused["code"] == "invalid_request" and "twice" in refused["message"]


def test_k_counts_hospitals_not_shares(
    registry: Registry, base: dict[str, Any], kit: ModelKit
) -> None:
    """A hospital's old and new share are one hospital: with one other, two of K = 3."""
    hospital = make_hospital(registry, "updated")
    old, new = _push_share(registry, kit, hospital), _push_share(registry, kit, hospital)
    other = _push_share(registry, kit, make_hospital(registry, "other"))
    refused = _refused(registry, {"base_id": base["id"], "vector_ids": [old, new, other]})
    assert "at least 3 hospitals" in refused["message"], refused
    assert refused["detail"]["selected"] == 2


@pytest.mark.parametrize("field", ["base_id", "benchmark_id", "vector_ids"])
def test_an_empty_id_is_refused(registry: Registry, shares: list[str], field: str) -> None:
    """An empty id is not "no id": ``{"base_id": ""}`` used to mean the current base."""
    value: Any = [*shares[:2], ""] if field == "vector_ids" else ""
    refused = _refused(registry, {"vector_ids": shares, field: value})
    assert refused["code"] == "invalid_request" and field in refused["message"]
    assert "not an id" in refused["message"]


def _curl_commands(markdown: Path) -> list[str]:
    """Each ``curl`` command of the page's code blocks, its continued lines joined."""
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", markdown.read_text(), re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            if line.lstrip().startswith("curl "):
                commands.append(line.strip())
    return commands


def test_the_documented_secure_merges_are_accepted(
    registry: Registry, shares: list[str], tmp_path: Path
) -> None:
    """Each curl command of docs/secure-aggregation.md, run by bash with the real curl
    binary, ``$REGISTRY`` and ``$ADMIN`` set and the ``"..."`` ids filled in."""
    assert shutil.which("curl"), "the documented requests are curl commands: install curl"
    commands = [c for c in _curl_commands(SECURE_DOC) if "/secure/merges" in c]
    assert len(commands) == 2
    body = tmp_path / "body.json"
    # the doc's command line, with curl told to write the answer's body to a file and its
    # status to stdout
    wrap = 'curl() { command curl -sS -o "$BODY" -w "%{http_code}" "$@"; }\n'
    env = {**os.environ, "REGISTRY": registry.url, "ADMIN": registry.admin_token}
    for command in commands:
        for share in shares:
            command = command.replace('"..."', f'"{share}"', 1)
        assert '"..."' not in command
        ran = subprocess.run(
            ["bash", "-c", wrap + command],
            env={**env, "BODY": str(body)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "202", (command, body.read_text())


def test_every_documented_curl_body_is_sent_as_json() -> None:
    """Without a JSON content type curl sends ``-d`` as a form, which the API refuses."""
    for page in DOCS:
        for command in _curl_commands(page):
            if re.search(r"\s(-d|--data\S*)\s", command):
                assert "Content-Type: application/json" in command, (page.name, command)
