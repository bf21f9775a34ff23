"""The task catalogue (``app.tasks``) is the one contract between senders and workers:
every task a worker runs is in it, every task in it runs somewhere, what a service
defers is the catalogue's name and payload, and a worker refuses a malformed message
at the door, naming the task, before it touches anything."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.jobs import DEFERRED_KEY, defer_job
from app.tasks import TASKS, EvaluateRun, MergeRun, PolicyCheck, VectorAccepted
from worker.celery_app import beat_schedule, make_celery
from worker.config import WorkerSettings
from worker.queue import task_routes

MERGE_ONLY = """
from worker.celery_app import make_merge_celery
from worker.config import WorkerSettings
app = make_merge_celery(WorkerSettings(environment="test"))
print(*sorted(n for n in app.tasks if n.startswith("medvec.")))
"""


def _settings(**overrides: object) -> WorkerSettings:
    return WorkerSettings(environment="test", **overrides)  # type: ignore[arg-type]


def test_the_workers_run_exactly_the_catalogues_tasks() -> None:
    names = {task.name for task in TASKS}
    assert len(names) == len(TASKS)
    registered = {name for name in make_celery(_settings()).tasks if name.startswith("medvec.")}
    assert registered == names
    # the torch-free merge worker serves the merge task alone (in a process of its own:
    # Celery shares a process's declared tasks with every app made in it, docs/workers.md)
    merge_only = subprocess.run(
        [sys.executable, "-c", MERGE_ONLY], capture_output=True, text=True, check=True
    )
    assert merge_only.stdout.split() == [MergeRun.name]
    # beat and the routes name catalogue tasks only
    beat = {str(entry["task"]) for entry in beat_schedule(_settings(auto_merge=True)).values()}
    assert beat == {"medvec.sweep.run", PolicyCheck.name}
    assert set(task_routes(_settings(merge_queue="merges"))) == {MergeRun.name}


def test_a_deferred_task_is_its_name_and_json_payload() -> None:
    session = Session()
    defer_job(session, EvaluateRun(version_id="v", benchmark_id="b"))
    defer_job(session, PolicyCheck())
    assert session.info[DEFERRED_KEY] == [
        ("medvec.evaluate.run", {"version_id": "v", "benchmark_id": "b", "split": "test"}),
        ("medvec.policy.check", {"base_id": None}),
    ]


def test_a_malformed_message_is_refused_before_the_task_runs() -> None:
    app = make_celery(_settings())
    with pytest.raises(ValidationError, match="EvaluateRun"):
        app.tasks[EvaluateRun.name](version_id="v")  # no benchmark_id
    with pytest.raises(ValidationError, match="MergeRun"):
        app.tasks[MergeRun.name](job="j")  # job_id misspelt
    with pytest.raises(ValidationError, match="PolicyCheck"):
        app.tasks[PolicyCheck.name](base="b")  # no such field
    # a vector message of an earlier release also named its base: still read
    assert VectorAccepted(vector_id="x", base_id="y") == VectorAccepted(vector_id="x")
