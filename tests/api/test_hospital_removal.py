"""Removing a hospital on the live registry (SQLite and PostgreSQL): its tokens stop
working, it is audited once, its vectors stay stored but leave default merges and the
running sums, and the weighted mean built after the removal equals the streaming merge of
the remaining hospitals' vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from app.jobs import DEFERRED_KEY
from app.models import AuditEvent, BaseModelRecord, Hospital
from app.security import Actor
from app.services.hospitals import remove_hospital
from app.tasks import SumsRefresh
from tests.api.conftest import Registry, make_hospital
from tests.api.factories import ModelKit
from tests.api.helpers import error
from tests.api.test_running_sums import (
    _members,
    _push,
    assert_default_merge_uses_the_sums,
)
from worker.policy import activity
from worker.sums import check_sums, holds, refresh_sums, sums_path

pytestmark = pytest.mark.databases  # SQLite and PostgreSQL


def _removals(registry: Registry, hospital_id: str) -> int:
    with registry.session() as session:
        query = select(AuditEvent).where(
            AuditEvent.action == "hospital.removed", AuditEvent.target_id == hospital_id
        )
        return len(session.scalars(query).all())


def _new_vectors(registry: Registry, base_id: str) -> int:
    """What the auto-merge policy counts for ``base_id``."""
    with registry.session() as session:
        base = session.get(BaseModelRecord, base_id)
        assert base is not None
        return activity(session, base).new_vectors


def test_removal_revokes_tokens_keeps_vectors_and_is_audited_once(
    registry: Registry, kit: ModelKit, base: dict[str, Any]
) -> None:
    leaving = make_hospital(registry, "leaving")
    vector_id = _push(registry, kit, leaving.token, leaving.name, 0.6, 30)
    new_before = _new_vectors(registry, base["id"])
    with registry.client(leaving.token) as client:
        assert client.delete(f"/hospitals/{leaving.id}").status_code == 403
    with registry.admin() as admin:
        assert admin.delete("/hospitals/no-such-hospital").status_code == 404
        removed = admin.delete(f"/hospitals/{leaving.id}", params={"reason": "left"})
        assert removed.status_code == 200, removed.text
        assert removed.json()["removed_at"] is not None
        again = admin.delete(f"/hospitals/{leaving.id}")
        assert again.json()["removed_at"] == removed.json()["removed_at"]
        listed = {h["id"]: h for h in admin.get("/hospitals").json()}
        assert listed[leaving.id]["removed_at"] == removed.json()["removed_at"]
        assert admin.get(f"/vectors/{vector_id}").json()["status"] == "validated"
        token = admin.post(
            "/tokens", json={"name": "back", "role": "hospital", "hospital_id": leaving.id}
        )
        assert token.status_code == 409
        assert "was removed" in error(token)["message"]
    with registry.client(leaving.token) as client:
        assert client.get("/whoami").status_code == 401
    assert _new_vectors(registry, base["id"]) == new_before - 1  # auto-merge skips it
    assert _removals(registry, leaving.id) == 1
    with registry.session() as session:
        event = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "hospital.removed", AuditEvent.target_id == leaving.id
            )
        ).one()
        assert event.payload["reason"] == "left"
        assert event.payload["revoked_tokens"] == [leaving.token_id]
        assert event.payload["bases"] == [base["id"]]


def test_removal_asks_the_worker_to_refresh_the_sums_of_its_bases(
    registry: Registry, kit: ModelKit, base: dict[str, Any]
) -> None:
    leaving = make_hospital(registry, "leaving")
    _push(registry, kit, leaving.token, leaving.name, 0.7, 30)
    quiet = make_hospital(registry, "quiet")  # no vector: no base to refresh
    with registry.session() as session, session.begin():
        remove_hospital(session, Actor.system("test"), leaving.id)
        remove_hospital(session, Actor.system("test"), quiet.id)
        assert session.info[DEFERRED_KEY] == [(SumsRefresh.name, {"base_id": base["id"]})]
        session.info.pop(DEFERRED_KEY)
        removed = session.get(Hospital, leaving.id)
        assert removed is not None and removed.removed_at is not None


def test_a_merge_after_removal_equals_the_merge_of_the_remaining_hospitals(
    registry: Registry, kit: ModelKit, base: dict[str, Any], tmp_path: Path
) -> None:
    sessions = sessionmaker(registry.engine, expire_on_commit=False)
    store = registry.store
    hospitals = [make_hospital(registry, "stay") for _ in range(3)]
    pushed = [
        _push(registry, kit, h.token, h.name, 0.4 + 0.3 * i, 20 + 15 * i)
        for i, h in enumerate(hospitals)
    ]
    refresh_sums(sessions, store, base["id"])
    assert pushed[1] in _members(registry, base["id"], "samples")

    with registry.admin() as admin:
        assert admin.delete(f"/hospitals/{hospitals[1].id}").status_code == 200
    members = _members(registry, base["id"], "samples")
    assert pushed[1] not in members and {pushed[0], pushed[2]} <= set(members)
    # what the deferred job does: the removed hospital's share is subtracted
    assert refresh_sums(sessions, store, base["id"]) == ["samples", "uniform"]
    assert holds(sums_path(store, base["id"], "samples"), base["sha256"], members)

    with registry.admin() as admin:
        selection = {"vector_ids": [pushed[1]]}
        named = admin.post("/merges", json={"base_id": base["id"], "selection": selection})
        assert named.status_code == 422
        assert "removed hospital" in error(named)["message"]
    assert_default_merge_uses_the_sums(registry, base, members, 13, tmp_path)


def test_a_lost_refresh_is_made_by_the_periodic_check(
    registry: Registry, kit: ModelKit, base: dict[str, Any]
) -> None:
    """The refresh task queued by a removal is lost (no worker ran it): the sweeper's
    periodic check subtracts the removed hospital's share before comparing."""
    sessions = sessionmaker(registry.engine, expire_on_commit=False)
    hospitals = [make_hospital(registry, "lost") for _ in range(3)]
    pushed = [
        _push(registry, kit, h.token, h.name, 0.5 + 0.2 * i, 30 + 10 * i)
        for i, h in enumerate(hospitals)
    ]
    refresh_sums(sessions, registry.store, base["id"])
    with registry.admin() as admin:
        assert admin.delete(f"/hospitals/{hospitals[0].id}").status_code == 200
    members = _members(registry, base["id"], "samples")
    assert pushed[0] not in members
    path = sums_path(registry.store, base["id"], "samples")
    assert not holds(path, base["sha256"], members)  # the file still holds the removed share
    drifts = check_sums(sessions, registry.store, base["id"])
    assert holds(path, base["sha256"], members)
    assert drifts["samples"] < 1e-9
