"""Merge requests at the live registry (SQLite and PostgreSQL): the same inputs asked for
again are the same job; a failed job asked for again is queued again, its attempts and
error cleared, and audited as requeued."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.models import JobStatus, MergeJob
from tests.api.conftest import Registry, make_hospital
from tests.api.factories import ModelKit
from tests.api.test_running_sums import _push


def _fail(registry: Registry, job_id: str) -> None:
    """What a worker leaves behind when a job runs out of attempts."""
    with registry.session() as session, session.begin():
        job = session.get(MergeJob, job_id)
        assert job is not None
        job.status, job.error, job.attempts = JobStatus.FAILED, "out of memory", 3
        job.finished_at = datetime.now(UTC)


def test_a_failed_job_asked_for_again_is_queued_again_once(
    registry: Registry, kit: ModelKit, base: dict[str, Any]
) -> None:
    hospitals = [make_hospital(registry, "requeue") for _ in range(2)]
    vector_ids = [
        _push(registry, kit, h.token, h.name, 0.3 + 0.2 * i, 20) for i, h in enumerate(hospitals)
    ]
    body = {
        "base_id": base["id"],
        "selection": {"vector_ids": vector_ids},
        "calibration": "none",
        "seed": 23,
    }
    with registry.admin() as admin:
        first = admin.post("/merges", json=body)
        assert first.status_code == 202, first.text
        job_id = first.json()["job_id"]
        _fail(registry, job_id)

        again = admin.post("/merges", json=body)
        assert again.status_code == 202, again.text
        assert again.json() == {"job_id": job_id, "status": "queued"}
        job = admin.get(f"/merges/{job_id}").json()
        assert (job["status"], job["attempts"], job["error"]) == ("queued", 0, None)

        assert admin.post("/merges", json=body).json()["job_id"] == job_id  # queued: as it is
        events = admin.get("/audit", params={"target_id": job_id}).json()
    assert sorted(e["action"] for e in events) == ["merge.requested", "merge.requeued"]
