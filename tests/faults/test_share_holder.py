"""SIGKILL and SIGSTOP of the share holder while a secure merge needs its sum. The job
waits for it (``queued``, its error naming the share holder, tried again with a growing
delay), holds no worker meanwhile, and completes once the share holder is back, with no
admin action: the same version as a plaintext weighted mean of the same vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from app.models import JobStatus, MergeJob
from medvec.merging import merge_files
from tests.faults.world import Fleet
from tests.servers import RedisServer, WorkerProcess

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

World = tuple[Fleet, WorkerProcess, RedisServer]
ENDED = (JobStatus.SUCCEEDED, JobStatus.FAILED)
LONGEST_WAIT = "retrying in 2 s"
"""the delay between tries at its cap (``share_holder_retry_max_s`` of the world)"""


def _shares(fleet: Fleet, prefix: str) -> list[dict[str, Any]]:
    return [fleet.push_secure(f"{prefix}-{n}") for n in range(3)]


def _when_error_says(fleet: Fleet, job_id: str, words: str) -> MergeJob:
    """The job as it was when its error said ``words`` (or when it ended, if first)."""
    seen: dict[str, MergeJob] = {}

    def said() -> bool:
        seen["job"] = job = fleet.job(job_id)
        return job.status in ENDED or words in (job.error or "")

    fleet.poll(f"merge job {job_id} to say {words!r}", said)
    return seen["job"]


def _assert_plaintext_mean(fleet: Fleet, job_id: str, shares: list[dict[str, Any]]) -> None:
    """The secure version equals the plaintext weighted mean of the same vectors (within
    the fixed-point encoding's precision)."""
    assert fleet.base_path is not None
    version_id = fleet.job(job_id).version_id
    merged, plain = fleet.tmp / f"secure-{job_id}.st", fleet.tmp / f"plain-{job_id}.st"
    with fleet.admin() as admin:
        answer = admin.get(f"/versions/{version_id}/download")
    assert answer.status_code == 200, answer.text
    merged.write_bytes(answer.content)
    vectors: list[Path] = [share["vector_path"] for share in shares]
    merge_files(fleet.base_path, vectors, plain, strategy="weighted_mean")
    secure_state, plain_state = load_file(merged), load_file(plain)
    worst = max(
        float((secure_state[k].double() - plain_state[k].double()).abs().max())
        for k, tensor in plain_state.items()
        if tensor.is_floating_point()
    )
    assert worst < 1e-6, worst


def test_share_holder_killed_mid_secure_merge_then_the_merge_completes(distributed: World) -> None:
    fleet, _worker, _redis = distributed
    holder = fleet.holder
    assert holder is not None
    shares = _shares(fleet, "holder-killed")
    holder.kill()
    job_id = fleet.secure_merge([share["id"] for share in shares])
    # tried again and again, each time later, until the delay reaches its cap
    job = _when_error_says(fleet, job_id, LONGEST_WAIT)
    assert job.status is JobStatus.QUEUED, job.error
    assert f"share holder at {holder.url} unreachable" in (job.error or ""), job.error
    assert job.waiting_since is not None and job.retry_at is not None
    assert job.attempts == 0  # a try that found the share holder down is no dead delivery

    holder.start()  # on the same port, with the same shares
    fleet.poll("the secure merge", lambda: fleet.job_status(job_id) in ENDED)
    fleet.assert_recovered()
    _assert_plaintext_mean(fleet, job_id, shares)


def test_share_holder_hung_mid_secure_merge_holds_no_worker(distributed: World) -> None:
    fleet, _worker, _redis = distributed
    holder = fleet.holder
    assert holder is not None
    shares = _shares(fleet, "holder-hung")
    plain_inputs = [fleet.push(f"holder-hung-plain-{n}")["id"] for n in range(2)]
    holder.pause()  # it accepts connections (the kernel does) and answers nothing
    try:
        job_id = fleet.secure_merge([share["id"] for share in shares])
        waiting = _when_error_says(fleet, job_id, "did not answer")
        assert waiting.status is JobStatus.QUEUED, waiting.error
        plain = fleet.merge(plain_inputs)
        # the only worker process merges while the secure merge waits for the holder
        fleet.poll("the plain merge", lambda: fleet.job_status(plain) in ENDED)
        assert fleet.job_status(plain) is JobStatus.SUCCEEDED
        job = fleet.job(job_id)
        assert job.status in (JobStatus.QUEUED, JobStatus.RUNNING), job.error
    finally:
        holder.resume()
    assert f"share holder at {holder.url} did not answer within 5 s" in (waiting.error or "")
    fleet.poll("the secure merge", lambda: fleet.job_status(job_id) in ENDED)
    fleet.assert_recovered()
    _assert_plaintext_mean(fleet, job_id, shares)
