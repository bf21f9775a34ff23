"""SIGKILL of the ``celery worker`` process mid-merge and mid-evaluation, and of the Redis
server while jobs wait in it; after each restart every job finishes and the registry is
whole (:meth:`Fleet.assert_recovered`)."""

from __future__ import annotations

import pytest

from app.models import EvaluationStatus, JobStatus
from app.tasks import MergeRun
from tests.faults.world import Fleet
from tests.servers import RedisServer, WorkerProcess

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

World = tuple[Fleet, WorkerProcess, RedisServer]


def _vectors(fleet: Fleet, prefix: str, count: int = 3) -> list[str]:
    return [fleet.push(f"{prefix}-{n}")["id"] for n in range(count)]


def test_worker_killed_mid_merge_then_the_merge_completes(distributed: World) -> None:
    fleet, worker, _redis = distributed
    job_id = fleet.merge(_vectors(fleet, "w-merge"))
    fleet.poll("the merge to run", lambda: fleet.job_status(job_id) is JobStatus.RUNNING)
    worker.kill()
    assert fleet.job_status(job_id) is JobStatus.RUNNING
    worker.start()
    fleet.assert_recovered()


def test_worker_killed_mid_evaluation_then_it_is_evaluated(distributed: World) -> None:
    fleet, worker, _redis = distributed
    job_id = fleet.merge(_vectors(fleet, "w-eval"))
    fleet.poll("the merge", lambda: fleet.job_status(job_id) is JobStatus.SUCCEEDED)
    fleet.poll("an evaluation to run", lambda: fleet.evaluations(EvaluationStatus.RUNNING) > 0)
    worker.kill()
    worker.start()
    fleet.assert_recovered()


def test_redis_restarted_while_jobs_are_queued_then_they_run(distributed: World) -> None:
    fleet, worker, redis_server = distributed
    worker.stop()  # nobody consumes: the jobs wait in Redis
    jobs = [fleet.merge(_vectors(fleet, f"redis-{n}", 2)) for n in range(2)]
    queue = worker.queue

    def merges_waiting() -> int:
        # celery beat keeps sending the sweep every few seconds; count only the merges
        return redis_server.queued(queue).count(MergeRun.name)

    # at least one message per job: the sweeper re-sends a job queued for 3 s, so on a
    # loaded machine a job may already wait twice (polling for exactly one each missed it)
    fleet.poll("the jobs to wait in Redis", lambda: merges_waiting() >= len(jobs))
    redis_server.kill()  # no persistence: the messages are gone
    redis_server.start()
    assert merges_waiting() == 0
    assert [fleet.job_status(job) for job in jobs] == [JobStatus.QUEUED] * len(jobs)
    worker.start()  # the sweeper (celery beat) sends the jobs again
    fleet.assert_recovered()
