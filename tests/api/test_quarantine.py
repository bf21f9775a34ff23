"""Screening and quarantine on a live registry of the module's own (SQLite and
PostgreSQL): a vector many times larger than the others is quarantined with the reason,
its hospital sees why, merges cannot name it, and an admin releases or rejects it
(audited)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from app.db import make_sessionmaker
from app.jobs import NullJobQueue
from app.models import DataVector
from app.tasks import VectorAccepted
from tests.api.conftest import Registry, make_hospital, registry_of_the_module
from tests.api.factories import ModelKit
from tests.api.helpers import error
from tests.api.screening import push_scaled as _push
from tests.api.screening import screen as _screen
from worker.config import worker_settings
from worker.session import session_scope
from worker.sweeper import sweep

pytestmark = pytest.mark.databases  # SQLite and PostgreSQL


# screening compares a vector with every other hospital's current vector of the base,
# and these tests rely on those being the kit's vector rescaled; in the shared registry a
# noisy vector of another module moved the peers' mean direction past the cosine check
registry, base = registry_of_the_module("quarantine")


def test_an_outlier_is_quarantined_and_its_hospital_sees_why(
    registry: Registry, kit: ModelKit, outlier_scale: float
) -> None:
    hospital = make_hospital(registry, "boosted")
    vector = _screen(registry, _push(registry, kit, hospital, outlier_scale)["id"])
    assert vector["status"] == "quarantined"
    assert "the median" in vector["reason"] and "limit 3x" in vector["reason"]
    screening = vector["screening"]
    assert screening["norm"] == pytest.approx(vector["norm"])
    # the shared registry's other vectors are (nearly) the kit's vector rescaled
    assert screening["peers"] >= 2 and screening["cosine_to_peers"] == pytest.approx(1.0, abs=0.01)
    assert set(screening["layer_norms"]) >= {"conv1", "fc", "bn1"}
    with registry.client(hospital.token) as client:
        own = client.get(f"/vectors/{vector['id']}").json()
        assert own["status"] == "quarantined" and own["reason"] == vector["reason"]
        assert client.get("/quarantine").status_code == 403
    with registry.admin() as admin:
        listed = admin.get("/quarantine", params={"base_id": vector["base_id"]}).json()
        assert vector["id"] in {v["id"] for v in listed}
        named = admin.post(
            "/merges",
            json={"base_id": vector["base_id"], "selection": {"vector_ids": [vector["id"]]}},
        )
        assert named.status_code == 422 and "quarantined" in error(named)["message"]
        events = admin.get("/audit", params={"target_id": vector["id"]}).json()
    assert "vector.quarantined" in {e["action"] for e in events}


def test_release_and_reject_are_audited_and_final(
    registry: Registry, kit: ModelKit, outlier_scale: float
) -> None:
    kept, dropped = (make_hospital(registry, name) for name in ("released", "rejected"))
    first = _screen(registry, _push(registry, kit, kept, outlier_scale)["id"])
    second = _screen(registry, _push(registry, kit, dropped, outlier_scale * 1.01)["id"])
    assert first["status"] == second["status"] == "quarantined"
    with registry.admin() as admin:
        released = admin.post(f"/quarantine/{first['id']}/release", json={"note": "checked"})
        assert released.status_code == 200, released.text
        assert released.json()["status"] == "validated" and released.json()["reason"] is None
        again = admin.post(f"/quarantine/{first['id']}/release")
        assert again.status_code == 409 and error(again)["detail"]["status"] == "validated"
        rejected = admin.post(f"/quarantine/{second['id']}/reject", json={"reason": "boosted"})
        assert rejected.status_code == 200, rejected.text
        assert (
            admin.post(f"/quarantine/{second['id']}/reject", json={"reason": "x"}).status_code
            == 409
        )
        assert admin.post("/quarantine/nope/release", json={}).status_code == 404
        empty = admin.post(f"/quarantine/{second['id']}/reject", json={"reason": ""})
        assert empty.status_code == 422
        actions = {
            e["action"]
            for vector in (first, second)
            for e in admin.get("/audit", params={"target_id": vector["id"]}).json()
        }
    assert {"vector.released", "vector.rejected"} <= actions
    # screening does not run twice: the released vector stays validated
    assert _screen(registry, first["id"])["status"] == "validated"
    with registry.client(dropped.token) as client:
        own = client.get(f"/vectors/{second['id']}").json()
    assert own["status"] == "rejected" and own["reason"] == "rejected by an admin: boosted"


def test_a_new_vector_supersedes_a_quarantined_one(
    registry: Registry, kit: ModelKit, outlier_scale: float
) -> None:
    hospital = make_hospital(registry, "retrained")
    held = _screen(registry, _push(registry, kit, hospital, outlier_scale)["id"])
    assert held["status"] == "quarantined"
    fresh = _push(registry, kit, hospital, 1.05)
    with registry.admin() as admin:
        old = admin.get(f"/vectors/{held['id']}").json()
    assert old["status"] == "superseded" and old["superseded_by_id"] == fresh["id"]


def test_the_sweeper_screens_a_vector_whose_job_was_lost(
    registry: Registry, kit: ModelKit, base: dict[str, Any]
) -> None:
    vector = _push(registry, kit, make_hospital(registry, "lost"), 1.02)
    queue = NullJobQueue()
    settings = worker_settings(registry.settings)
    sessions = make_sessionmaker(registry.engine)
    with session_scope(sessions, queue) as session:
        assert vector["id"] not in sweep(session, settings)  # its job may still be coming
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with registry.engine.begin() as connection:
        connection.execute(
            update(DataVector).where(DataVector.id == vector["id"]).values(created_at=an_hour_ago)
        )
    with session_scope(sessions, queue) as session:
        resent = sweep(session, settings)
    assert vector["id"] in resent
    assert (VectorAccepted.name, {"vector_id": vector["id"]}) in queue.sent
