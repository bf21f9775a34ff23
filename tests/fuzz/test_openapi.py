"""Schemathesis against the live OpenAPI document of a real ``medvec-server serve`` process,
on the embedded SQLite default and on PostgreSQL, as an admin, as a hospital and with no
token.

Every check schemathesis has runs (``--checks all``): no 5xx, every status code, content
type, header and response body as documented, bad requests refused and valid ones
accepted, over its examples, coverage, fuzzing and stateful phases (sequences of calls
along the links it infers between operations). The few requests OpenAPI cannot describe
as invalid are named, with their reason, in ``schemathesis.toml`` beside this file.

The examples per operation are bounded so that the module runs in a few minutes; set
``MEDVEC_FUZZ_EXAMPLES`` and ``MEDVEC_FUZZ_SEED`` for a longer or another run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hospital_cli.demo.server import mint_token
from tests.integration.services import fresh_postgres_database
from tests.servers import ServerProcess, registry_env

pytestmark = [pytest.mark.slow]

CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = os.environ.get("MEDVEC_FUZZ_EXAMPLES", "6")
SEED = os.environ.get("MEDVEC_FUZZ_SEED", "20261129")


@dataclass(frozen=True)
class Served:
    server: ServerProcess
    tokens: dict[str, str | None]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A registry process with a seeded admin and a seeded hospital token, no worker
    (merges stay queued: the fuzzing is of the API)."""
    folder = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    admin = mint_token()
    with contextlib.ExitStack() as stack:
        settings = {"auto_migrate": "true"}
        if request.param == "postgres":
            settings["database_url"] = stack.enter_context(fresh_postgres_database())
        env = registry_env(folder / "data", admin, **settings)
        server = ServerProcess(env, folder, worker=False)
        stack.callback(server.stop)
        server.start()
        yield _seeded(server, admin)


def _seeded(server: ServerProcess, admin: str) -> Served:
    """The server with one hospital and its token."""
    with server.client(admin) as client:
        hospital = client.post("/hospitals", json={"name": "fuzz-hospital"})
        assert hospital.status_code == 201, hospital.text
        body = {"name": "fuzz", "role": "hospital", "hospital_id": hospital.json()["id"]}
        token = client.post("/tokens", json=body)
        assert token.status_code == 201, token.text
    return Served(server, {"admin": admin, "hospital": token.json()["token"], "anonymous": None})


def _schemathesis() -> list[str]:
    beside = Path(sys.executable).with_name("schemathesis")
    found = str(beside) if beside.is_file() else shutil.which("schemathesis")
    assert found, "schemathesis is not installed: pip install -e '.[dev]'"
    return [found]


@pytest.mark.parametrize("who", ["admin", "hospital", "anonymous"])
def test_the_api_conforms_to_its_openapi_document(served: Served, who: str, tmp_path: Path) -> None:
    token = served.tokens[who]
    command = [
        *_schemathesis(),
        "--config-file",
        str(CONFIG),
        "run",
        f"{served.server.url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        EXAMPLES,
        "--seed",
        SEED,
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        *(["--header", f"Authorization: Bearer {token}"] if token else []),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_COLOR": "1"},
        cwd=tmp_path,  # schemathesis keeps its cache (.schemathesis/) in the working directory
    )
    assert result.returncode == 0, (
        f"schemathesis found failures as {who}:\n{result.stdout[-20000:]}\n{result.stderr[-3000:]}"
        f"\nserver log:\n{served.server.logs()[-5000:]}"
    )
