"""Schemathesis against the live OpenAPI documents of a real registry (``medvec-server
serve``) and a real share holder (``medvec-aggregator``) holding real data, on the embedded
SQLite defaults and on PostgreSQL.

The registry is fuzzed as an admin, as a hospital and with no token; the share holder as
the registry (its token there, which asks for sums), as a hospital (uploads of share B,
its shares) and as its admin (tokens, the audit log). The world (tests/fuzz/world.py) has a base,
a benchmark, plain and secure pushes of K hospitals, a plain and a secure version, and
open upload sessions; the share holder has released the secure merge's sum. The ids of
all of these are fed to the fuzzer (schemathesis parameter dictionaries, and a hook for
the members of a sum, tests/fuzz/hooks.py), so that about half of the requests name
records that exist and reach the services' rules: ``/api/v1/secure/merges`` with a share
holder configured and real shares, ``/sums`` with real pair ids against the set-size and
differencing checks.

Every check schemathesis has runs (``--checks all``): no 5xx, every status code, content
type, header and response body as documented, bad requests refused and valid ones
accepted, over its examples, coverage, fuzzing and stateful phases (sequences of calls
along the links it infers between operations). The few requests OpenAPI cannot describe
as invalid are named, with their reason, in ``schemathesis.toml`` beside this file.

The examples per operation are bounded so that the module runs in a few minutes; set
``MEDVEC_FUZZ_EXAMPLES`` and ``MEDVEC_FUZZ_SEED`` for a longer or another run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fuzz.hooks import PAIR_IDS_ENV
from tests.fuzz.world import SecureWorld, secure_world

pytestmark = [pytest.mark.slow]

CONFIG = Path(__file__).with_name("schemathesis.toml")
HOOKS = Path(__file__).with_name("hooks.py")
EXAMPLES = os.environ.get("MEDVEC_FUZZ_EXAMPLES", "6")
SEED = os.environ.get("MEDVEC_FUZZ_SEED", "20261129")
#: how often a parameter with known ids takes one of them rather than a generated value
KNOWN_ID_PROBABILITY = 0.5


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path
) -> Iterator[SecureWorld]:
    folder = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    with secure_world(folder, datasets_dir, request.param) as seeded:
        yield seeded


@pytest.mark.parametrize("who", ["admin", "hospital", "anonymous"])
def test_the_registry_conforms_to_its_openapi_document(
    world: SecureWorld, who: str, tmp_path: Path
) -> None:
    token = {"admin": world.admin, "hospital": world.hospital.token, "anonymous": None}[who]
    config = _config(tmp_path, world.registry_ids)
    _fuzz(world.registry.url, token, config, tmp_path, {}, world.registry.logs)


@pytest.mark.parametrize("who", ["registry", "hospital", "admin"])
def test_the_share_holder_conforms_to_its_openapi_document(
    world: SecureWorld, who: str, tmp_path: Path
) -> None:
    token = {
        "registry": world.holder_registry_token,
        "hospital": world.hospital.holder_token,
        "admin": world.holder.admin_token,
    }[who]
    config = _config(tmp_path, world.holder_ids)
    env = {"SCHEMATHESIS_HOOKS": str(HOOKS), PAIR_IDS_ENV: ",".join(world.pair_ids)}
    _fuzz(world.holder.url, token, config, tmp_path, env, world.holder.logs)


def _config(folder: Path, ids: dict[str, list[str]]) -> Path:
    """``schemathesis.toml`` plus a dictionary per parameter name holding the world's ids,
    bound to that parameter wherever it appears (path, query or JSON body; each item of a
    body list named ``*_ids``)."""
    lines = [CONFIG.read_text(), "", "[parameters]"]
    tables = []
    for name, values in ids.items():
        binding = f'{{ dictionary = "{name}", probability = {KNOWN_ID_PROBABILITY} }}'
        keys = [f"body.{name}[*]"] if name.endswith("_ids") else [name, f"body.{name}"]
        lines += [f'"{key}" = {binding}' for key in keys]
        tables += ["", f"[dictionaries.{name}]", f"values = {json.dumps(values)}"]
    path = folder / "schemathesis.toml"
    path.write_text("\n".join([*lines, *tables]) + "\n")
    return path


def _schemathesis() -> list[str]:
    beside = Path(sys.executable).with_name("schemathesis")
    found = str(beside) if beside.is_file() else shutil.which("schemathesis")
    assert found, "schemathesis is not installed: pip install -e '.[dev]'"
    return [found]


def _fuzz(
    url: str,
    token: str | None,
    config: Path,
    folder: Path,
    env: dict[str, str],
    logs: Callable[[], str],
) -> None:
    command = [
        *_schemathesis(),
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
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
        str(folder),
        *(["--header", f"Authorization: Bearer {token}"] if token else []),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_COLOR": "1", **env},
        cwd=folder,  # schemathesis keeps its cache (.schemathesis/) in the working directory
    )
    assert result.returncode == 0, (
        f"schemathesis found failures:\n{result.stdout[-20000:]}\n{result.stderr[-3000:]}"
        f"\nserver log:\n{logs()[-5000:]}"
    )
