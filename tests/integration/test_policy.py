"""The auto-merge rule and the sweeper, on the real PostgreSQL database of the session."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_sessionmaker
from app.jobs import NullJobQueue
from app.models import (
    BaseModelRecord,
    BaseStatus,
    DataVector,
    Hospital,
    JobStatus,
    MergeJob,
    ModelVersion,
    UploadSession,
    UploadStatus,
    VectorStatus,
    VersionInput,
    VersionStatus,
)
from app.security import Actor
from app.services.gates import policy_of
from app.services.generations import staleness, start_generation
from app.services.uploads import part_name
from app.storage import LocalBlobStore
from medvec.gates import GatePolicy
from tests.integration.conftest import World
from worker.config import WorkerSettings
from worker.policy import BaseActivity, check_policy, is_due
from worker.session import session_scope
from worker.sweeper import stale_staging_files, sweep

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def _settings(**overrides: Any) -> WorkerSettings:
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
    assert settings.auto_merge  # asynchrony is the default: versions come from arrivals
    assert (policy.k, policy.every_s) == (settings.auto_merge_k, settings.auto_merge_every_s)
    assert policy.stale == settings.stale_policy.value == "weight"
    assert policy.staleness_power == settings.staleness_power == 0.5
    assert policy.gate is not None and policy.gate == policy_of(settings) == GatePolicy()
    assert policy.gate.class_metrics == ()  # the gate on overall metrics only
    # hospitals train from every merged version; production follows the gate
    assert policy.generations == settings.auto_generation.value == "merged"


@dataclass
class Lineage:
    """Two generations of one architecture, as rows: ``old`` and its child ``new``, the
    current base, and each hospital's validated vectors (96 samples each) by name.
    ``later``: bases a test started afterwards (newest first), ``versions``: versions it
    made; both removed with the rest."""

    old: str
    new: str
    vectors: dict[str, str]
    hospitals: list[str]
    later: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)


@pytest.fixture()
def sessions(settings: WorkerSettings, world: World) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(str(settings.database_url))
    yield make_sessionmaker(engine)
    engine.dispose()


def _vector(hospital_id: str, base_id: str, screened_at: datetime | None) -> DataVector:
    """A validated vector row of 96 samples (``screened_at`` None: not screened yet)."""
    return DataVector(
        hospital_id=hospital_id, base_id=base_id, sha256=secrets.token_hex(32), size=1,
        norm=1.0, num_samples=96, meta={}, status=VectorStatus.VALIDATED,
        screened_at=screened_at,
    )  # fmt: skip


def _version(session: Session, base_id: str, status: VersionStatus) -> ModelVersion:
    """A stored version row of ``base_id`` (its file never read)."""
    version = ModelVersion(
        base_id=base_id, strategy="weighted_mean", params={}, sha256=secrets.token_hex(32),
        size=1, status=status,
    )  # fmt: skip
    session.add(version)
    session.flush()
    return version


@pytest.fixture()
def lineage(sessions: sessionmaker[Session], world: World) -> Iterator[Lineage]:
    """Hospitals a, b, c pushed against ``new``; a also pushed against ``old`` before, and
    d pushed against ``old`` only. ``new`` was started from a version of ``old`` that
    merged a's old vector (d's arrived after it). Every vector screened. ``new`` is
    numbered above every base of the session's database, so it is the current base."""
    screened = datetime.now(UTC) - timedelta(minutes=1)
    with session_scope(sessions) as session:
        spec = session.get(BaseModelRecord, world.base["id"]).spec  # type: ignore[union-attr]
        top = session.scalar(select(func.max(BaseModelRecord.generation))) or 0
        hospitals = {n: Hospital(name=f"policy-{n}-{secrets.token_hex(4)}") for n in "abcd"}
        session.add_all(hospitals.values())
        bases: list[BaseModelRecord] = []
        for generation in (top + 1, top + 2):
            base = BaseModelRecord(
                name=f"policy-g{generation}", arch=spec["arch"], spec=spec, provenance={},
                sha256=secrets.token_hex(32), size=1, generation=generation,
                status=BaseStatus.READY, parent_id=bases[-1].id if bases else None,
            )  # fmt: skip
            session.add(base)
            session.flush()
            bases.append(base)
        old, new = bases
        rows = {
            name: _vector(hospitals[name[0]].id, base.id, screened)
            for name, base in (("a-old", old), ("d-old", old), ("a", new), ("b", new), ("c", new))
        }
        session.add_all(rows.values())
        source = _version(session, old.id, VersionStatus.ARCHIVED)
        session.add(VersionInput(version_id=source.id, vector_id=rows["a-old"].id, weight=96.0))
        new.source_version_id = source.id
        made = Lineage(
            old.id, new.id, {n: v.id for n, v in rows.items()}, [h.id for h in hospitals.values()],
            versions=[source.id],
        )  # fmt: skip
    yield made
    base_ids = [*made.later, made.new, made.old]
    with session_scope(sessions) as session:
        session.execute(delete(MergeJob).where(MergeJob.base_id.in_(base_ids)))
        session.execute(
            update(BaseModelRecord)
            .where(BaseModelRecord.id.in_(base_ids))
            .values(source_version_id=None)
        )
        session.execute(delete(ModelVersion).where(ModelVersion.id.in_(made.versions)))
        session.execute(delete(DataVector).where(DataVector.hospital_id.in_(made.hospitals)))
        for base_id in made.later:
            session.execute(delete(BaseModelRecord).where(BaseModelRecord.id == base_id))
        session.execute(delete(BaseModelRecord).where(BaseModelRecord.id == made.new))
        session.execute(delete(BaseModelRecord).where(BaseModelRecord.id == made.old))
        session.execute(delete(Hospital).where(Hospital.id.in_(made.hospitals)))


def _auto_merge(
    sessions: sessionmaker[Session],
    settings: WorkerSettings,
    pushed_on: str | None,
    current: str,
) -> dict[str, tuple[int, float]]:
    """Run the worker's policy after a vector against ``pushed_on`` (``None``: on beat);
    the inputs (staleness, weight) by vector id of its one job, which must merge the
    ``current`` base. The job is removed afterwards, so the base is due again."""
    with session_scope(sessions, NullJobQueue()) as session:
        (job_id,) = check_policy(session, settings, base_id=pushed_on)
    with session_scope(sessions) as session:
        job = session.get(MergeJob, job_id)
        assert job is not None and job.requested_by == "system:auto-merge"
        assert job.base_id == current
        inputs = {i["vector_id"]: (i["staleness"], i["weight"]) for i in job.selection["inputs"]}
        assert job.rebase is (job.selection["stale"] == "weight")
        session.delete(job)
    return inputs


def _same_inputs(got: dict[str, tuple[int, float]], expected: dict[str, tuple[int, float]]) -> None:
    assert {k: s for k, (s, _w) in got.items()} == {k: s for k, (s, _w) in expected.items()}
    assert {k: w for k, (_s, w) in got.items()} == pytest.approx(
        {k: w for k, (_s, w) in expected.items()}
    )


@pytest.mark.parametrize(
    ("env", "stale_weight"),
    [
        ({}, 96 * 2**-0.5),  # the defaults: stale vectors weighted, a = 0.5
        ({"MEDVEC_STALE_POLICY": "weight", "MEDVEC_STALENESS_POWER": "1"}, 96 / 2),
        ({"MEDVEC_STALE_POLICY": "exclude"}, None),
    ],
)
def test_auto_merge_treats_stale_vectors_as_the_worker_settings_say(
    env: dict[str, str],
    stale_weight: float | None,
    sessions: sessionmaker[Session],
    lineage: Lineage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hospital d's only vector is one generation old: the auto-merge applies it with its
    weight, or leaves it out, as MEDVEC_STALE_POLICY and MEDVEC_STALENESS_POWER say;
    hospital a's older vector, inside the current base's weights, does not count beside
    its current one."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = _settings(screening_enabled=False)
    fresh = {lineage.vectors[n]: (0, 96.0) for n in "abc"}
    stale = {} if stale_weight is None else {lineage.vectors["d-old"]: (1, stale_weight)}
    _same_inputs(_auto_merge(sessions, settings, lineage.new, lineage.new), {**fresh, **stale})


def test_auto_merge_waiting_for_screening_still_applies_stale_vectors(
    sessions: sessionmaker[Session], lineage: Lineage
) -> None:
    """A vector still being screened is left for the next merge; what screening passed is
    merged as the default selection would, stale vectors included."""
    with session_scope(sessions) as session:
        hospital = Hospital(name=f"policy-e-{secrets.token_hex(4)}")
        session.add(hospital)
        session.flush()
        lineage.hospitals.append(hospital.id)
        session.add(_vector(hospital.id, lineage.new, None))
    settings = _settings(screening_enabled=True)
    expected = {lineage.vectors[n]: (0, 96.0) for n in "abc"}
    expected[lineage.vectors["d-old"]] = (1, 96 * 2**-0.5)
    _same_inputs(_auto_merge(sessions, settings, lineage.new, lineage.new), expected)


def test_an_older_vector_no_version_took_is_merged_beside_the_newer_one(
    sessions: sessionmaker[Session], lineage: Lineage
) -> None:
    """Hospital d's vector of ``old`` arrived after the version ``new`` was started from;
    d then pulled ``new`` and pushed again before any merge. Both are merged, each with
    its own staleness: replacing the first by the second would lose the first job's work
    (the second was trained from a base without it). a's older vector, which the version
    took, is not."""
    with session_scope(sessions) as session:
        d_new = _vector(lineage.hospitals[3], lineage.new, datetime.now(UTC))
        session.add(d_new)
        session.flush()
        d_new_id = d_new.id
    expected = {lineage.vectors[n]: (0, 96.0) for n in "abc"}
    expected[d_new_id] = (0, 96.0)
    expected[lineage.vectors["d-old"]] = (1, 96 * 2**-0.5)
    got = _auto_merge(sessions, _settings(screening_enabled=False), lineage.new, lineage.new)
    _same_inputs(got, expected)


def _push(sessions: sessionmaker[Session], lineage: Lineage, base_id: str, count: int) -> list[str]:
    """``count`` new hospitals each push one screened, validated vector against ``base_id``."""
    with session_scope(sessions) as session:
        hospitals = [Hospital(name=f"policy-{secrets.token_hex(4)}") for _ in range(count)]
        session.add_all(hospitals)
        session.flush()
        lineage.hospitals.extend(h.id for h in hospitals)
        rows = [_vector(hospital.id, base_id, datetime.now(UTC)) for hospital in hospitals]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _jobs_of(sessions: sessionmaker[Session], base_id: str) -> int:
    with session_scope(sessions) as session:
        return int(
            session.scalar(select(func.count(MergeJob.id)).where(MergeJob.base_id == base_id)) or 0
        )


@pytest.mark.parametrize("stale", ["weight", "exclude"])
@pytest.mark.parametrize("on_beat", [False, True])
def test_k_vectors_against_an_old_base_merge_the_current_base_only(
    stale: str,
    on_beat: bool,
    sessions: sessionmaker[Session],
    lineage: Lineage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three more hospitals push against the old base, which then holds K vectors of its
    own since it was last merged. The check after such a push (or on beat) merges the
    current base, never the old one: a version of the old base, once promoted and started
    as a generation, would fork the lineage away from the vectors of the newer base. The
    old base's vectors reach the current base weighted, or not at all with exclude."""
    monkeypatch.setenv("MEDVEC_STALE_POLICY", stale)
    late = _push(sessions, lineage, lineage.old, 3)
    settings = _settings(screening_enabled=False)
    got = _auto_merge(sessions, settings, None if on_beat else lineage.old, lineage.new)
    expected = {lineage.vectors[n]: (0, 96.0) for n in "abc"}
    if stale == "weight":
        for vector_id in [lineage.vectors["d-old"], *late]:
            expected[vector_id] = (1, 96 * 2**-0.5)
    _same_inputs(got, expected)
    assert _jobs_of(sessions, lineage.old) == 0


def test_vectors_against_an_old_base_do_not_count_toward_k(
    sessions: sessionmaker[Session], lineage: Lineage
) -> None:
    """The current base has two validated vectors, one short of K; five of the old base do
    not make a merge due, neither after a push against the old base nor on beat."""
    with session_scope(sessions) as session:
        vector = session.get(DataVector, lineage.vectors["c"])
        assert vector is not None
        vector.status = VectorStatus.QUARANTINED
    _push(sessions, lineage, lineage.old, 3)
    settings = _settings(screening_enabled=False)
    for pushed_on in (lineage.old, None):
        with session_scope(sessions, NullJobQueue()) as session:
            assert check_policy(session, settings, base_id=pushed_on) == []
    assert _jobs_of(sessions, lineage.old) == _jobs_of(sessions, lineage.new) == 0


@pytest.mark.parametrize("stale", ["weight", "exclude"])
def test_the_schedule_merges_a_stale_vector_that_arrived_alone(
    stale: str,
    sessions: sessionmaker[Session],
    lineage: Lineage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The current base was merged two hours ago; since then only one vector arrived, from
    a hospital still on the old base (the straggler's case). It does not count toward K,
    but once the schedule's period passed the beat merges it, weighted as stale, beside
    what the base already had; with ``exclude`` nothing the merge would take arrived, so
    nothing is due. Before, the schedule counted only the current base's vectors, and the
    straggler's last vector waited for K fresh ones that may never come."""
    monkeypatch.setenv("MEDVEC_STALE_POLICY", stale)
    settings = _settings(screening_enabled=False, auto_merge_every_s=3600)
    with session_scope(sessions, NullJobQueue()) as session:
        (first,) = check_policy(session, settings)  # a, b, c: K of the current base
    hours_ago = datetime.now(UTC) - timedelta(hours=2)
    with session_scope(sessions) as session:
        session.execute(update(MergeJob).where(MergeJob.id == first).values(created_at=hours_ago))
        session.execute(
            update(DataVector)
            .where(DataVector.id.in_(lineage.vectors.values()))
            .values(created_at=hours_ago - timedelta(minutes=1))
        )
    with session_scope(sessions, NullJobQueue()) as session:
        assert check_policy(session, settings) == []  # nothing arrived since
    (late,) = _push(sessions, lineage, lineage.old, 1)
    with session_scope(sessions, NullJobQueue()) as session:
        jobs = check_policy(session, settings)
    if stale == "exclude":
        assert jobs == []
        return
    (job_id,) = jobs
    with session_scope(sessions) as session:
        job = session.get(MergeJob, job_id)
        assert job is not None and job.base_id == lineage.new
        inputs = {i["vector_id"]: i["staleness"] for i in job.selection["inputs"]}
    assert inputs[late] == 1 and inputs[lineage.vectors["d-old"]] == 1
    assert all(inputs[lineage.vectors[n]] == 0 for n in "abc")


def test_staleness_counts_generations_along_the_lineage_not_generation_numbers(
    sessions: sessionmaker[Session], lineage: Lineage
) -> None:
    """An admin starts a generation from a version of the old base after ``new`` exists:
    it is numbered above ``new`` (start_generation numbers globally) but its parent, the
    old base, is one generation behind it, and ``new`` is not in its lineage. The
    auto-merge of it weighs the old base's vectors as one generation stale."""
    with session_scope(sessions) as session:
        old = session.get(BaseModelRecord, lineage.old)
        new = session.get(BaseModelRecord, lineage.new)
        assert old is not None and new is not None
        version = _version(session, old.id, VersionStatus.CANDIDATE)
        lineage.versions.append(version.id)
        branch = start_generation(session, Actor.system("test"), version)
        lineage.later.append(branch.id)
        assert branch.parent_id == old.id and branch.generation == new.generation + 1
        assert branch.generation - old.generation == 2
        assert staleness(session, branch, old.id) == 1
        assert staleness(session, branch, new.id) is None
        assert staleness(session, branch, branch.id) == 0
        assert staleness(session, new, old.id) == 1
    fresh = _push(sessions, lineage, branch.id, 3)
    got = _auto_merge(sessions, _settings(screening_enabled=False), branch.id, branch.id)
    expected = dict.fromkeys(fresh, (0, 96.0))
    # a's newest vector of the branch's lineage is a-old: its vector of new is elsewhere
    for name in ("a-old", "d-old"):
        expected[lineage.vectors[name]] = (1, 96 * 2**-0.5)
    _same_inputs(got, expected)


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
