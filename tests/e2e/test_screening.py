"""Screening, quarantine and the promotion gate end to end: real hospitals on real
BloodMNIST, four of them poisoned, pushed to a live registry with its worker
(``medvec-server serve --worker``) on SQLite and on PostgreSQL.

Each poisoned vector is quarantined with its reason, which its hospital reads on
``medvec status``; the automatic merge takes the honest vectors only and is promoted
by the auto-promotion policy once its evaluation passes the gate. Released, the
poisoned vectors drag the next merge down: the gate refuses it (the CLI prints the
checks as a table) until an admin forces it, which the audit log records.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from hospital_cli.demo.server import embedded_registry
from hospital_cli.main import app as cli_app
from medvec.simulation.poisoning import POISONS, PoisonScenario, build_scenario
from tests.integration.services import fresh_postgres_database

API = "/api/v1"
RAW = {"Content-Type": "application/octet-stream"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> PoisonScenario:
    return build_scenario(datasets_dir, tmp_path_factory.mktemp("poisoning"), honest=3)


@pytest.fixture(scope="module")
def benchmark_file(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("bench") / "blood.npz"
    with np.load(datasets_dir / "bloodmnist.npz") as data:
        arrays = {f"{s}_{k}": data[f"{s}_{k}"][:n] for s, n in (("val", 300), ("test", 500))
                  for k in ("images", "labels")}  # fmt: skip
    np.savez(path, **arrays)
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    settings = {"MEDVEC_AUTO_PROMOTE": "true", "MEDVEC_SCREENING_MAX_IMAGES": "300"}
    if request.param == "sqlite":
        with embedded_registry(tmp_path / "data", auto_merge_k=3, extra_env=settings) as server:
            yield server
        return
    with fresh_postgres_database() as url:
        env = {**settings, "MEDVEC_DATABASE_URL": url, "MEDVEC_AUTO_MIGRATE": "true"}
        with embedded_registry(tmp_path / "data", auto_merge_k=3, extra_env=env) as server:
            yield server


class Api:
    def __init__(self, url: str, admin_token: str) -> None:
        self.url, self.admin_token = url, admin_token
        self.tokens: dict[str, str] = {}
        self.http = httpx.Client(base_url=url + API, timeout=120)

    def call(self, method: str, path: str, who: str = "admin", **kwargs: Any) -> Any:
        token = self.admin_token if who == "admin" else self.tokens[who]
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        response = self.http.request(method, path, headers=headers, **kwargs)
        assert response.status_code < 400, f"{method} {path}: {response.text}"
        return response.json()

    def hospital(self, name: str) -> None:
        record = self.call("POST", "/hospitals", json={"name": name})
        body = {"name": name, "role": "hospital", "hospital_id": record["id"]}
        self.tokens[name] = self.call("POST", "/tokens", json=body)["token"]

    def wait(self, path: str, done: Callable[[Any], bool], timeout: float = 1500) -> Any:
        deadline = time.monotonic() + timeout
        while not done(body := self.call("GET", path)):
            assert time.monotonic() < deadline, f"GET {path} still {body}"
            time.sleep(1.0)
        return body


def _cli(api: Api, who: str, *args: str) -> Any:
    token = api.admin_token if who == "admin" else api.tokens[who]
    return CliRunner().invoke(cli_app, [*args, "--server", api.url, "--token", token])


def _push_and_screen(api: Api, name: str, path: Path) -> dict[str, Any]:
    pushed = api.call("POST", "/vectors", who=name, content=path.read_bytes(), headers=RAW)
    return dict(api.wait(f"/vectors/{pushed['id']}", lambda v: v["screened_at"] is not None))


def _test_accuracy(api: Api, version_id: str) -> float:
    rows = api.wait(
        f"/versions/{version_id}/evaluations",
        lambda rows: {r["split"] for r in rows if r["status"] == "completed"} >= {"val", "test"},
    )
    return float(next(r for r in rows if r["split"] == "test")["metrics"]["accuracy"])


def _merge_version(api: Api, base_id: str) -> str:
    jobs = api.wait(
        "/merges", lambda jobs: any(j["status"] == "succeeded" for j in jobs), timeout=1500
    )
    return str(next(j for j in jobs if j["status"] == "succeeded")["version_id"])


def test_poisoned_hospitals_are_quarantined_and_the_gate_guards_production(
    registry: Any, scenario: PoisonScenario, benchmark_file: Path, tmp_path: Path
) -> None:
    api = Api(registry.url, registry.admin_token)
    base = api.call("POST", "/bases", params={"name": "blood-r10"},
                    content=scenario.base_path.read_bytes(), headers=RAW)  # fmt: skip
    # the worker verifies a new base before it takes vectors
    assert (
        api.wait(f"/bases/{base['id']}", lambda b: b["status"] != "verifying")["status"] == "ready"
    )
    api.call("POST", "/benchmarks", params={"name": "blood"},
             content=benchmark_file.read_bytes(), headers=RAW)  # fmt: skip
    for name in scenario.vectors:
        api.hospital(name)
    # honest hospitals first: the auto-merge (K=3) waits until all three are screened
    for name, path in scenario.honest.items():
        assert _push_and_screen(api, name, path)["status"] == "validated", name
    clean = _merge_version(api, base["id"])
    clean_accuracy = _test_accuracy(api, clean)
    assert api.wait(f"/versions/{clean}", lambda v: v["status"] == "production")
    promoted = api.call("GET", "/audit", params={"target_id": clean})
    (event,) = [e for e in promoted if e["action"] == "version.promoted"]
    assert event["actor"] == "system:auto-promote" and event["payload"]["forced"] is False
    # ...and made the next generation's base, which the hospitals pull now
    current = api.call("GET", "/bases/current")
    assert (current["source_version_id"], current["parent_id"]) == (clean, base["id"])

    quarantined = {}
    for name in POISONS:
        vector = _push_and_screen(api, name, scenario.poisoned[name])
        assert vector["status"] == "quarantined", (name, vector["screening"])
        assert vector["reason"], name
        quarantined[name] = vector
    shown = _cli(api, "label_flip", "status", "--json")
    assert shown.exit_code == 0, shown.output
    (own,) = json.loads(shown.output)["vectors"]
    assert own["status"] == "quarantined" and own["reason"] == quarantined["label_flip"]["reason"]
    listed = _cli(api, "admin", "admin", "quarantine", "list", "--json")
    assert {v["id"] for v in json.loads(listed.output)} == {v["id"] for v in quarantined.values()}
    # nothing new merged: the merge of the rest is the honest one, still in production
    assert len(api.call("GET", "/merges")) == 1

    for vector in quarantined.values():
        released = _cli(api, "admin", "admin", "quarantine", "release", vector["id"], "--json")
        assert released.exit_code == 0, released.output
    job = api.call("POST", "/merges", json={"base_id": base["id"], "strategy": "weighted_mean"})
    dragged = api.wait(f"/merges/{job['job_id']}", lambda j: j["status"] == "succeeded")
    poisoned = str(dragged["version_id"])
    poisoned_accuracy = _test_accuracy(api, poisoned)
    assert clean_accuracy > poisoned_accuracy + 0.1, (clean_accuracy, poisoned_accuracy)
    time.sleep(2)  # auto-promotion ran after each evaluation: the gate refused
    assert api.call("GET", f"/versions/{poisoned}")["status"] == "candidate"
    refused = _cli(api, "admin", "admin", "promote", poisoned)
    assert refused.exit_code != 0
    assert "promotion gate" in refused.output and "FAIL" in refused.output
    assert "accuracy" in refused.output
    forced = _cli(api, "admin", "admin", "promote", poisoned, "--force", "--json")
    assert forced.exit_code == 0, forced.output
    events = api.call("GET", "/audit", params={"target_id": poisoned})
    (forcing,) = [e["payload"] for e in events if e["action"] == "version.promoted"]
    assert forcing["forced"] is True and forcing["gate"]["passed"] is False
