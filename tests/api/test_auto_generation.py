"""Generations from merged versions (``MEDVEC_AUTO_GENERATION=merged``, the default), on
SQLite and PostgreSQL with the live API and the worker's own merge: every version the
auto-merge policy makes of the current base is what hospitals pull next, whatever the
gate decides about production; an admin's merge, a merge of a base that moved on, and
the ``promoted`` and ``off`` settings start none."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.config import AutoGeneration
from app.jobs import NullJobQueue
from tests.api.conftest import Registry, make_hospital, registry_of_the_module
from tests.api.factories import ModelKit
from tests.api.helpers import push
from worker.config import WorkerSettings
from worker.evaluate import Evaluator
from worker.merge import run_merge
from worker.policy import check_policy
from worker.session import session_scope

pytestmark = pytest.mark.databases  # SQLite and PostgreSQL

# the module's own registry: its tests move the current base
registry, base = registry_of_the_module("generations")


def _push_two(registry: Registry, kit: ModelKit, scale: float) -> None:
    """Two hospitals push a vector each against the kit's base."""
    for offset in (0.0, 0.5):
        hospital = make_hospital(registry, "generation")
        path = kit.vector(hospital.name, scale=scale + offset)
        with registry.client(hospital.token) as client:
            response = push(client, path)
        assert response.status_code == 201, response.text


def _auto_merge(sessions: sessionmaker[Session], settings: WorkerSettings) -> str:
    """The auto-merge policy's job for the current base, now due."""
    with session_scope(sessions, NullJobQueue()) as session:
        (job_id,) = check_policy(session, settings)
    return job_id


def _run(sessions: sessionmaker[Session], registry: Registry, job: str, **settings: Any) -> str:
    """Run merge ``job`` as the worker does, with ``settings``; the version's id."""
    worker = registry.worker_settings(**settings)
    outcome = run_merge(sessions, registry.store, job, worker, evaluator=lambda: Evaluator(worker))
    assert outcome.version_id is not None
    return outcome.version_id


def _current(registry: Registry) -> dict[str, Any]:
    with registry.admin() as admin:
        return dict(admin.get("/bases/current").json())


def test_every_auto_merged_version_of_the_current_base_starts_the_next_generation(
    registry: Registry, kit: ModelKit, base: dict[str, Any]
) -> None:
    sessions = sessionmaker(registry.engine, expire_on_commit=False)
    policy = {"auto_merge": True, "auto_merge_k": 2, "screening_enabled": False}
    assert registry.worker_settings().auto_generation is AutoGeneration.MERGED  # the default

    # an admin's merge is the admin's to promote or to start a generation from
    _push_two(registry, kit, 1.0)
    with registry.admin() as admin:
        accepted = admin.post("/merges", json={"base_id": base["id"], "calibration": "none"})
        assert accepted.status_code == 202, accepted.text
    _run(sessions, registry, accepted.json()["job_id"], **policy)
    assert _current(registry)["id"] == base["id"]

    # with the other settings the auto-merge's versions start none either
    for setting in (AutoGeneration.PROMOTED, AutoGeneration.OFF):
        _push_two(registry, kit, 2.0 + int(setting is AutoGeneration.OFF))
        job = _auto_merge(sessions, registry.worker_settings(**policy))
        _run(sessions, registry, job, **policy, auto_generation=setting)
        assert _current(registry)["id"] == base["id"]

    # two auto-merges of the base in flight: the first recorded starts the generation
    _push_two(registry, kit, 4.0)
    first = _auto_merge(sessions, registry.worker_settings(**policy))
    _push_two(registry, kit, 5.0)
    second = _auto_merge(sessions, registry.worker_settings(**policy))
    version = _run(sessions, registry, first, **policy)
    current = _current(registry)
    assert current["source_version_id"] == version and current["parent_id"] == base["id"]
    assert current["generation"] == base["generation"] + 1
    with registry.admin() as admin:
        assert admin.get(f"/versions/{version}").json()["status"] == "candidate"
        events = admin.get("/audit", params={"target_id": current["id"]}).json()
    (started,) = [e for e in events if e["action"] == "base.generation_started"]
    assert started["actor"] == "system:auto-generation"

    # the second was made from a base that is no longer current: a generation from it
    # would fork the lineage away from vectors pushed against the first's
    _run(sessions, registry, second, **policy)
    assert _current(registry)["id"] == current["id"]
