"""The asynchronous schedule, the demo's default: no hospital ever waits for another.

Every hospital loops on its own (``HospitalLoop``) while the run's budget lasts (the
lockstep schedule's work, in images), and every job it started is pushed. The registry
does the rest with its own policies, as it would for real hospitals: the auto-merge
policy merges a base once K new vectors arrived (stale vectors of hospitals that pulled
an older generation applied weighted), the worker recalibrates and evaluates each
version, and the promotion gate promotes every version that is no worse than production
on validation (``MEDVEC_AUTO_PROMOTE``) and makes it the base of a new generation
(``MEDVEC_AUTO_GENERATION``), which the hospitals' next jobs pull. The demo only watches.

The run ends when the last job has pushed and the registry has finished what those
pushes set off. Then the admin asks for one more merge of the current base with the
auto-merge policy's own strategy and stale rule: the end of the run stands for the
policy's next tick, as in the simulation (``RegistryServer.finish``). Without it, vectors
that arrived stale (against a base the registry had already moved past) wait for K fresh
vectors that never come, and a slow or late hospital's last work is in no version. The
selection leaves out what is already inside the current base (it takes a hospital's
older vector only when no version of the lineage took it), and the promotion gate judges
the result like any other version; the last version promoted is the demo's result.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from hospital_cli.client import RegistryClient
from hospital_cli.demo.hospital import Hospital, HospitalLoop
from hospital_cli.demo.pace import Budget
from hospital_cli.errors import ApiError, CliError

if TYPE_CHECKING:
    from hospital_cli.demo.run import DemoRun

POLL_S = 1.0
SETTLE_TIMEOUT_S = 900.0


class Generations:
    """Reports every generation the registry starts from a version it promoted."""

    def __init__(self, demo: DemoRun, admin: RegistryClient) -> None:
        self.demo, self.admin = demo, admin
        self.seen: set[str] = set()

    def follow(self) -> None:
        try:
            bases = self.admin.list_bases()
        except Exception:  # the registry is busy; look again at the next tick
            return
        for base in sorted(bases, key=lambda b: int(b.get("generation", 0))):
            vid, bid = base.get("source_version_id"), str(base["id"])
            if vid is None or bid in self.seen:
                continue
            self.seen.add(bid)
            self.demo.event(
                "new_generation", base_from=vid, base_id=bid, generation=base.get("generation")
            )
            self.demo.ui.phase(f"production {vid[:8]} is generation {base.get('generation')}")


def run_asynchronous(demo: DemoRun, admin: RegistryClient, hospitals: list[Hospital]) -> None:
    """Run every hospital's loop to the end of the budget, then let the registry finish
    the merges, evaluations and promotions the last vectors set off."""
    budget = Budget(demo.report.budget_images)
    loops = [HospitalLoop(hospital, budget) for hospital in hospitals]
    generations = Generations(demo, admin)
    demo.start_hospitals()
    for loop in loops:
        loop.start()
    seen: set[str] = set()
    while any(loop.is_alive() and not loop.waiting for loop in loops):
        generations.follow()
        demo.watch(admin, None, seen)
        demo.ui.phase(f"hospitals at their own pace: {budget.trained:,}/{budget.total:,} images")
        time.sleep(POLL_S)
    budget.close()  # a late joiner still waiting (the others stopped early) gives up
    for loop in loops:
        loop.join()
    rounds = sorted((r for loop in loops for r in loop.results), key=lambda r: r.pushed_s)
    demo.report.locals.extend(rounds)
    demo.report.images_trained = budget.trained
    for r in rounds:
        demo.event("pushed", hospital=r.hospital, vector_id=r.vector_id, t_push=r.pushed_s)
    pushed = [str(r.vector_id) for r in rounds if r.vector_id and r.vector_status != "rejected"]
    if not pushed:
        errors = "; ".join(sorted({r.error or str(r.vector_status) for r in rounds}))
        raise CliError(f"no hospital pushed a valid vector ({errors})")
    demo.await_screening(admin, pushed)
    _settle(demo, admin)
    final = _merge_what_is_left(demo, admin)
    if final is not None:
        _settle(demo, admin)
    demo.report.schedule_s = round(time.monotonic() - demo.hospitals_started, 2)
    demo.event("finished")
    demo.report.production = demo.production_history(admin)
    demo.report.promoted = [str(p["version_id"]) for p in demo.report.production]
    _collect(demo, admin, final)


def _merge_what_is_left(demo: DemoRun, admin: RegistryClient) -> str | None:
    """Ask for the merge the auto-merge policy's next tick would make of the current base
    (its strategy, its stale rule and staleness power); the job's id, or
    ``None`` when there is nothing to merge. Asking for inputs a job already merged finds
    that job, so this makes a new version only when something is left."""
    policy = demo.report.registry
    base = admin.get_base("current")
    selection = {
        "stale": policy["MEDVEC_STALE_POLICY"],
        "staleness_power": float(policy["MEDVEC_STALENESS_POWER"]),
    }
    try:
        job = admin.request_merge(
            str(base["id"]), policy["MEDVEC_AUTO_MERGE_STRATEGY"], selection=selection
        )
    except ApiError as exc:
        if exc.code != "invalid_input":
            raise
        demo.ui.phase(f"nothing left to merge: {exc}")  # no validated vector is left
        return None
    job_id = str(job.get("job_id") or job.get("id"))
    demo.event("end_of_run_merge", base_id=base["id"], job_id=job_id)
    demo.ui.phase(f"merging what is left on base {str(base['id'])[:8]} (job {job_id[:8]})")
    return job_id


def _settle(demo: DemoRun, admin: RegistryClient) -> None:
    """Wait for the merges the policy (or the admin) asked for, their evaluations and the
    promotions that follow them."""
    time.sleep(POLL_S)  # the policy asks right after the screening it waited for
    _await_all_merges(demo, admin)
    demo.await_evaluations(admin, None)
    time.sleep(POLL_S)  # the registry promotes right after a version's evaluation


def _await_all_merges(demo: DemoRun, admin: RegistryClient) -> None:
    """Wait until no merge job is queued or running (the policy's and the admin's)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        busy = [j for j in admin.list_merges() if j.get("status") in ("queued", "running")]
        demo.ui.phase(f"waiting for {len(busy)} merge jobs")
        if not busy:
            return
        time.sleep(POLL_S)
    raise CliError(f"merge jobs did not finish in {SETTLE_TIMEOUT_S:.0f} s")


def _collect(demo: DemoRun, admin: RegistryClient, final_job: str | None) -> None:
    """Every version, in order of creation, with the generation of the base it was merged
    on (counted from 1, as lockstep's), what made it (the policy, or the end-of-run merge
    ``final_job``) and whether it was ever in production."""
    generation_of = {str(b["id"]): int(b.get("generation", 0)) for b in admin.list_bases()}
    promoted = set(demo.report.promoted)
    for version in sorted(admin.list_versions(), key=lambda v: str(v.get("created_at"))):
        vid = str(version["id"])
        generation = generation_of.get(str(version.get("base_id")), 0) + 1
        job = (version.get("params") or {}).get("merge_job_id")
        trigger = "end-of-run" if final_job is not None and job == final_job else "auto-merge"
        merged = demo.merged_version(admin, version, generation, trigger)
        if vid in promoted:
            merged.status = "production"
        demo.report.versions.append(merged)
