"""The lockstep schedule (``medvec demo --lockstep``): generations with a barrier.

Per generation, every hospital present pulls the current base, fine-tunes and pushes
whenever it is ready (the registry's auto-merge policy turns arrivals into interim
versions as they come); when the last one has pushed, the admin asks for one merge per
strategy (task arithmetic with lambda tuned on the benchmark's validation split), waits
for their evaluations, promotes the version best on validation (its test metrics are
what the report shows, untouched by the choice) and starts the next generation from it.
"""

from __future__ import annotations

import time
from typing import Any

from hospital_cli.client import RegistryClient
from hospital_cli.demo.hospital import Hospital, LockstepRound
from hospital_cli.demo.run import JOB_TIMEOUT_S, POLL_S, DemoRun
from hospital_cli.errors import ApiError, CliError

LAMBDA_MULTIPLES = (0.5, 1.0, 1.5, 2.0)


def run_lockstep(
    demo: DemoRun, admin: RegistryClient, hospitals: list[Hospital], benchmark_id: str
) -> None:
    """Every generation waits for its last hospital, then the admin merges and promotes."""
    demo.start_hospitals()
    for number in range(1, demo.settings.generations + 1):
        _generation(demo, number, admin, hospitals, benchmark_id)
    demo.report.schedule_s = round(time.monotonic() - demo.hospitals_started, 2)
    demo.report.production = demo.production_history(admin)


def _generation(
    demo: DemoRun, number: int, admin: RegistryClient, hospitals: list[Hospital], benchmark_id: str
) -> str:
    base = admin.get_base("current")
    demo.ui.phase(f"generation {number}: hospitals fine-tune base {str(base['id'])[:8]}")
    demo.event("generation", generation=number, base_id=base.get("id"))
    threads = [
        LockstepRound(hospital, number, base)
        for hospital in hospitals
        if hospital.pace.present_in_round(number, demo.settings.generations)
    ]
    for thread in threads:
        thread.start()
    seen: set[str] = set()
    while any(t.is_alive() for t in threads):
        demo.watch(admin, str(base["id"]), seen)
        time.sleep(POLL_S)
    rounds = [t.result for t in threads if t.result is not None]
    demo.report.locals.extend(rounds)
    demo.report.images_trained += sum(r.samples * r.epochs for r in rounds if r.vector_id)
    for r in rounds:
        demo.event("pushed", hospital=r.hospital, vector_id=r.vector_id, t_push=r.pushed_s)
    pushed = [r for r in rounds if r.vector_id and r.vector_status != "rejected"]
    if len(pushed) < 1:
        errors = "; ".join(r.error or str(r.vector_status) for r in rounds)
        raise CliError(f"generation {number}: no hospital pushed a valid vector ({errors})")
    demo.await_screening(admin, [str(r.vector_id) for r in pushed])
    return _merge_all(demo, number, admin, str(base["id"]), benchmark_id, len(pushed))


def _merge_all(
    demo: DemoRun, number: int, admin: RegistryClient, base_id: str, benchmark_id: str, k: int
) -> str:
    demo.ui.phase(f"generation {number}: merging {k} vectors with every strategy")
    requested: dict[str, str] = {}
    for strategy in demo.settings.strategies:
        params: dict[str, Any] = {}
        if strategy == "task_arithmetic":
            params = {"lambda_grid": [m / k for m in LAMBDA_MULTIPLES]}
        job = admin.request_merge(base_id, strategy, params=params, benchmark_id=benchmark_id)
        requested[str(job.get("job_id") or job.get("id"))] = strategy
    finished = _await_jobs(demo, admin, requested)
    demo.await_evaluations(admin, base_id)
    _collect_versions(demo, number, admin, base_id, set(finished.values()))
    return _promote(demo, number, admin, base_id, finished)


def _await_jobs(demo: DemoRun, admin: RegistryClient, jobs: dict[str, str]) -> dict[str, str]:
    """Wait for every merge job; job id -> version id of those that succeeded."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    done: dict[str, str] = {}
    pending = dict(jobs)
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job = admin.get_merge(job_id)
            if job.get("status") == "succeeded":
                done[job_id] = str(job.get("version_id"))
                pending.pop(job_id)
            elif job.get("status") == "failed":
                demo.event("merge_failed", strategy=pending.pop(job_id), error=job.get("error"))
        demo.ui.phase(f"merging: {len(done)}/{len(jobs)} merge jobs done")
        time.sleep(POLL_S)
    if pending:
        raise CliError(f"merge jobs did not finish in {JOB_TIMEOUT_S:.0f} s: {list(pending)}")
    return done


def _collect_versions(
    demo: DemoRun, number: int, admin: RegistryClient, base_id: str, requested: set[str]
) -> None:
    for version in sorted(admin.list_versions(), key=lambda v: str(v.get("created_at"))):
        if str(version.get("base_id")) == base_id:
            trigger = "admin" if str(version["id"]) in requested else "auto-merge"
            demo.report.versions.append(demo.merged_version(admin, version, number, trigger))


def _promote(
    demo: DemoRun, number: int, admin: RegistryClient, base_id: str, finished: dict[str, str]
) -> str:
    candidates = [
        v
        for v in demo.report.versions
        if v.generation == number and v.version_id in finished.values() and v.val_metrics
    ]
    if not candidates:
        raise CliError(f"generation {number}: no version evaluated on validation to promote")
    best = max(candidates, key=lambda v: v.val_metrics["accuracy"])
    try:
        admin.promote(best.version_id, "production")
    except ApiError as exc:
        if exc.code != "gate_failed":
            raise
        # the demo shows one production model per generation: a refusal by the
        # promotion gate is reported, and the promotion forced (audited as such)
        demo.event("gate_refused", generation=number, version_id=best.version_id,
                   message=exc.message)  # fmt: skip
        demo.ui.phase(f"generation {number}: promotion gate refused; forcing it")
        admin.promote(best.version_id, "production", force=True)
    best.status = "production"
    demo.report.promoted.append(best.version_id)
    demo.event("promoted", generation=number, version_id=best.version_id)
    demo.ui.phase(f"generation {number}: promoted {best.strategy} {best.version_id[:8]}")
    if number < demo.settings.generations:
        admin.start_generation(best.version_id)
        demo.event("new_generation", base_from=best.version_id, previous_base=base_id)
    return best.version_id
