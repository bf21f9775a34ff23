"""The auto-merge rule and the sweeper, on the real PostgreSQL database of the session."""

from __future__ import annotations

import os
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from app.db import make_engine, make_sessionmaker
from app.jobs import NullJobQueue
from app.models import Hospital, JobStatus, MergeJob, UploadSession, UploadStatus
from app.services.gates import policy_of
from app.services.uploads import part_name
from app.storage import LocalBlobStore
from tests.integration.conftest import World
from worker.config import WorkerSettings
from worker.policy import BaseActivity, is_due
from worker.session import session_scope
from worker.sweeper import stale_staging_files, sweep

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def _settings(**overrides: object) -> WorkerSettings:
    return WorkerSettings(environment="test", auto_merge=True, auto_merge_k=3, **overrides)


def test_due_after_k_new_vectors_and_not_before() -> None:
    settings = _settings()
    last = NOW - timedelta(days=1)
    assert not is_due(BaseActivity("b", last, 2), settings, NOW)
    assert is_due(BaseActivity("b", last, 3), settings, NOW)
    assert is_due(BaseActivity("b", None, 3), settings, NOW)


def test_schedule_merges_whatever_is_new_once_the_period_passed() -> None:
    settings = _settings(auto_merge_every_s=3600)
    assert is_due(BaseActivity("b", NOW - timedelta(hours=2), 1), settings, NOW)
    assert not is_due(BaseActivity("b", NOW - timedelta(minutes=30), 1), settings, NOW)
    assert not is_due(BaseActivity("b", NOW - timedelta(hours=2), 0), settings, NOW)


def test_the_simulations_policy_defaults_are_the_workers() -> None:
    """The asynchronous simulation runs the registry's policy with the registry's defaults."""
    from medvec.simulation.asynchronous import PolicyConfig

    policy, settings = PolicyConfig(), WorkerSettings(environment="test")
    assert (policy.k, policy.every_s) == (settings.auto_merge_k, settings.auto_merge_every_s)
    assert policy.stale == settings.stale_policy.value
    assert policy.staleness_power == settings.staleness_power
    assert policy.gate is not None and policy.gate == policy_of(settings)


def test_sweeper_resends_a_job_left_queued_and_leaves_fresh_ones(
    settings: WorkerSettings, world: World
) -> None:
    engine = make_engine(str(settings.database_url))
    sessions = make_sessionmaker(engine)
    old = NOW - timedelta(hours=1)
    jobs = {
        age: MergeJob(
            base_id=world.base["id"],
            strategy="weighted_mean",
            params={},
            selection={"inputs": []},
            inputs_hash=secrets.token_hex(32),
            status=JobStatus.QUEUED,
            attempts=0,
            created_at=when,
            updated_at=when,
        )
        for age, when in (("stale", old), ("fresh", datetime.now(UTC)))
    }
    with session_scope(sessions) as session:
        session.add_all(jobs.values())
    ids = {age: job.id for age, job in jobs.items()}
    queue = NullJobQueue()
    try:
        with session_scope(sessions, queue) as session:
            resent = sweep(session, settings)
        assert ids["stale"] in resent and ids["fresh"] not in resent
        assert ("medvec.merge.run", {"job_id": ids["stale"]}) in queue.sent
        with session_scope(sessions, queue) as session:
            assert ids["stale"] not in sweep(session, settings)  # its clock was reset
    finally:
        with session_scope(sessions) as session:
            for job_id in ids.values():
                session.delete(session.get(MergeJob, job_id))
        engine.dispose()


def test_sweeper_leaves_a_job_waiting_for_the_share_holder_until_its_retry_is_due(
    settings: WorkerSettings, world: World
) -> None:
    engine = make_engine(str(settings.database_url))
    sessions = make_sessionmaker(engine)
    now = datetime.now(UTC)
    queued_long_ago = now - timedelta(hours=1)
    retries = {"later": now + timedelta(minutes=5), "overdue": queued_long_ago}
    jobs = {
        name: MergeJob(
            base_id=world.base["id"],
            strategy="secure_weighted_mean",
            params={"secure": True},
            selection={"inputs": []},
            inputs_hash=secrets.token_hex(32),
            status=JobStatus.QUEUED,
            attempts=0,
            error="share holder at http://holder.invalid unreachable (ConnectError)",
            created_at=queued_long_ago,
            updated_at=queued_long_ago,
            waiting_since=queued_long_ago,
            retry_at=retry_at,
        )
        for name, retry_at in retries.items()
    }
    with session_scope(sessions) as session:
        session.add_all(jobs.values())
    ids = {name: job.id for name, job in jobs.items()}
    queue = NullJobQueue()
    try:
        with session_scope(sessions, queue) as session:
            resent = sweep(session, settings)
        assert ids["overdue"] in resent and ids["later"] not in resent
        assert ("medvec.secure.merge", {"job_id": ids["overdue"]}) in queue.sent
    finally:
        with session_scope(sessions) as session:
            for job_id in ids.values():
                session.delete(session.get(MergeJob, job_id))
        engine.dispose()


def test_sweeper_removes_old_staging_leftovers_but_not_open_uploads_or_fresh_files(
    settings: WorkerSettings, world: World, tmp_path: Path
) -> None:
    """What a killed merge or a cut one-shot upload leaves goes once it is old; an open
    resumable upload's part and a file being written stay."""
    engine = make_engine(str(settings.database_url))
    sessions = make_sessionmaker(engine)
    store = LocalBlobStore(tmp_path / "blobs")
    with session_scope(sessions) as session:
        hospital_id = session.scalars(select(Hospital.id)).first()
        assert hospital_id is not None
        upload = UploadSession(
            hospital_id=hospital_id,
            sha256="0" * 64,
            size=10,
            offset=4,
            status=UploadStatus.OPEN,
            expires_at=datetime.now(UTC) + timedelta(days=1),
        )
        session.add(upload)
    hour_ago = time.time() - 2 * settings.staging_max_age_s
    files = {
        "merge": store.staging_path(".merge-job-1.tmp"),
        "cut": store.staging_path(),
        "open part": store.staging_path(part_name(upload.id)),
        "fresh": store.staging_path("merge-job-2.safetensors"),
    }
    for name, path in files.items():
        path.write_bytes(b"x" * 16)
        if name != "fresh":
            os.utime(path, (hour_ago, hour_ago))
    try:
        with session_scope(sessions) as session:
            removed = stale_staging_files(session, store, settings)
        assert sorted(removed) == sorted([files["merge"].name, files["cut"].name])
        assert not files["merge"].exists() and not files["cut"].exists()
        assert files["open part"].exists() and files["fresh"].exists()
    finally:
        with session_scope(sessions) as session:
            session.delete(session.get(UploadSession, upload.id))
        engine.dispose()
