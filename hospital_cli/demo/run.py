"""The demo's orchestration: registry up, hospitals at their own pace, merges, generations.

Per generation: every hospital thread pulls the current base, fine-tunes and pushes
whenever it is ready; the registry's auto-merge policy turns arrivals into interim
versions as they come; when the last hospital has pushed, the admin asks for one merge
per strategy (task arithmetic with lambda tuned on the benchmark's validation split);
the worker evaluates every version on the benchmark's validation and test splits; the
version best on validation is promoted to production (its test metrics are what the
table reports, untouched by the choice) and starts the next generation as its base.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hospital_cli.client import RegistryClient
from hospital_cli.demo.data import DemoData, prepare_data
from hospital_cli.demo.hospital import HospitalRun, HospitalSpec, RoundPlan
from hospital_cli.demo.reference import Background, Scorer, train_alone, train_centralized
from hospital_cli.demo.server import RunningRegistry, embedded_registry
from hospital_cli.demo.state import DemoReport, DemoSettings, MergedVersion, Ui, pick_metrics
from hospital_cli.errors import ApiError, CliError
from hospital_cli.waiting import await_status

JOB_TIMEOUT_S = 900.0
POLL_S = 1.0
LAMBDA_MULTIPLES = (0.5, 1.0, 1.5, 2.0)
SPLITS = ("val", "test")  # promotion chooses on val, the report shows test


def _settled(evaluations: list[dict[str, Any]]) -> bool:
    """A version is settled once its val and test evaluations have finished, well or not."""
    return all(
        pick_metrics(evaluations, split)
        or any(e.get("split") == split and e.get("status") == "failed" for e in evaluations)
        for split in SPLITS
    )


class DemoRun:
    """One demo run against a running registry; fills a :class:`DemoReport`."""

    def __init__(self, settings: DemoSettings, data: DemoData, base_file: Path, ui: Ui) -> None:
        self.settings, self.data, self.base_file, self.ui = settings, data, base_file, ui
        self.report = DemoReport(settings)
        self.started = time.monotonic()
        self.score = Scorer(data.benchmark, settings.device)

    def clock(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def event(self, kind: str, **info: Any) -> None:
        self.report.timeline.append({"t": self.clock(), "event": kind, **info})

    # -- registry set-up -----------------------------------------------------------
    def setup(self, admin: RegistryClient, server: str) -> tuple[list[HospitalSpec], str]:
        self.ui.phase("registering the base and the benchmark")
        base = admin.register_base(f"{self.settings.arch}-{self.settings.dataset}", self.base_file)
        base = await_status(base, lambda: admin.get_base(str(base["id"])), {"verifying"}, 300)
        if base.get("status") != "ready":
            raise CliError(f"the base is {base.get('status')}: {base.get('reason') or 'timeout'}")
        self.report.base = base
        benchmark = admin.register_benchmark(
            f"{self.settings.dataset}-heldout", self.data.benchmark
        )
        self.event("setup", base_id=base.get("id"), benchmark_id=benchmark.get("id"))
        specs: list[HospitalSpec] = []
        for number, (shard, size) in enumerate(
            zip(self.data.shards, self.data.shard_sizes, strict=True)
        ):
            name = f"hospital-{number + 1:02d}"
            hospital = admin.create_hospital(name)
            token = admin.create_token(f"{name}-demo", "hospital", str(hospital["id"]))
            workdir = self.settings.output / "hospitals" / name
            workdir.mkdir(parents=True, exist_ok=True)
            specs.append(HospitalSpec(name, str(token["token"]), shard, size, workdir))
        del server
        return specs, str(benchmark["id"])

    # -- one generation ---------------------------------------------------------------
    def generation(
        self, number: int, admin: RegistryClient, server: str, specs: list[HospitalSpec],
        benchmark_id: str,
    ) -> str:  # fmt: skip
        base = admin.get_base("current")
        self.ui.phase(f"generation {number}: hospitals fine-tune base {str(base['id'])[:8]}")
        self.event("generation", generation=number, base_id=base.get("id"))
        slots = threading.Semaphore(self.settings.concurrency)
        threads = []
        for index, spec in enumerate(specs):
            plan = RoundPlan(
                generation=number,
                base=base,
                epochs=self.settings.epochs,
                lr=self.settings.lr,
                batch_size=self.settings.batch_size,
                seed=self.settings.seed + 1000 * number + index,
                max_delay=self.settings.max_delay,
                device=self.settings.device,
            )
            thread = HospitalRun(
                spec, server, plan, slots=slots, clock=self.clock,
                status=self.ui.hospital,
                score=self.score if self.settings.score_locals else None,
            )  # fmt: skip
            thread.start()
            threads.append(thread)
        seen: set[str] = set()
        while any(t.is_alive() for t in threads):
            self._watch(admin, str(base["id"]), seen)
            time.sleep(POLL_S)
        rounds = [t.result for t in threads if t.result is not None]
        self.report.locals.extend(rounds)
        for r in rounds:
            self.event("pushed", hospital=r.hospital, vector_id=r.vector_id, t_push=r.pushed_s)
        pushed = [r for r in rounds if r.vector_id and r.vector_status != "rejected"]
        if len(pushed) < 1:
            errors = "; ".join(r.error or str(r.vector_status) for r in rounds)
            raise CliError(f"generation {number}: no hospital pushed a valid vector ({errors})")
        self._await_screening(admin, [str(r.vector_id) for r in pushed])
        return self._merge_all(number, admin, str(base["id"]), benchmark_id, len(pushed))

    def _await_screening(self, admin: RegistryClient, vector_ids: list[str]) -> None:
        """Wait until the registry has screened every pushed vector, as an admin would
        before merging: the auto-merge policy then makes its interim version from the
        vectors screening passed first, and no merge takes a vector about to be
        quarantined."""
        self.ui.phase("waiting for the registry to screen the vectors")
        deadline = time.monotonic() + JOB_TIMEOUT_S
        for vector_id in vector_ids:
            vector = admin.get_vector(vector_id)
            while (
                vector.get("status") == "validated"
                and vector.get("screened_at") is None
                and time.monotonic() < deadline
            ):
                time.sleep(POLL_S)
                vector = admin.get_vector(vector_id)

    def _watch(self, admin: RegistryClient, base_id: str, seen: set[str]) -> None:
        """Note auto-merged versions as they appear (the policy fires on arrivals)."""
        try:
            versions = admin.list_versions()
        except Exception:  # the registry is busy; look again at the next tick
            return
        for version in versions:
            vid = str(version.get("id"))
            if vid not in seen and str(version.get("base_id")) == base_id:
                seen.add(vid)
                self.event("version", version_id=vid, strategy=version.get("strategy"))
                self.ui.phase(f"new version {vid[:8]} ({version.get('strategy')}) from arrivals")

    def _merge_all(
        self, number: int, admin: RegistryClient, base_id: str, benchmark_id: str, k: int
    ) -> str:
        self.ui.phase(f"generation {number}: merging {k} vectors with every strategy")
        requested: dict[str, str] = {}
        for strategy in self.settings.strategies:
            params: dict[str, Any] = {}
            if strategy == "task_arithmetic":
                params = {"lambda_grid": [m / k for m in LAMBDA_MULTIPLES]}
            job = admin.request_merge(base_id, strategy, params=params, benchmark_id=benchmark_id)
            requested[str(job.get("job_id") or job.get("id"))] = strategy
        finished = self._await_jobs(admin, requested)
        self._await_evaluations(admin, base_id)
        self._collect_versions(number, admin, base_id, set(finished.values()))
        return self._promote(number, admin, base_id, finished)

    def _await_jobs(self, admin: RegistryClient, jobs: dict[str, str]) -> dict[str, str]:
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
                    self.event("merge_failed", strategy=pending.pop(job_id), error=job.get("error"))
            self.ui.phase(f"merging: {len(done)}/{len(jobs)} merge jobs done")
            time.sleep(POLL_S)
        if pending:
            raise CliError(f"merge jobs did not finish in {JOB_TIMEOUT_S:.0f} s: {list(pending)}")
        return done

    def _await_evaluations(self, admin: RegistryClient, base_id: str) -> None:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            versions = [v for v in admin.list_versions() if str(v.get("base_id")) == base_id]
            waiting = [v for v in versions if not _settled(admin.version_evaluations(v["id"]))]
            self.ui.phase(f"evaluating: {len(versions) - len(waiting)}/{len(versions)} versions")
            if not waiting:
                return
            time.sleep(POLL_S)
        raise CliError(f"evaluations did not finish in {JOB_TIMEOUT_S:.0f} s")

    def _collect_versions(
        self, number: int, admin: RegistryClient, base_id: str, requested: set[str]
    ) -> None:
        versions = sorted(admin.list_versions(), key=lambda v: str(v.get("created_at")))
        for version in versions:
            if str(version.get("base_id")) != base_id:
                continue
            vid = str(version["id"])
            inputs = version.get("inputs") or version.get("lineage") or []
            evaluations = admin.version_evaluations(vid)
            self.report.versions.append(
                MergedVersion(
                    generation=number,
                    version_id=vid,
                    strategy=str(version.get("strategy")),
                    trigger="admin" if vid in requested else "auto-merge",
                    params=dict(version.get("params") or {}),
                    vectors=len(inputs),
                    metrics=pick_metrics(evaluations, "test"),
                    val_metrics=pick_metrics(evaluations, "val"),
                    status=str(version.get("status")),
                )
            )

    def _promote(
        self, number: int, admin: RegistryClient, base_id: str, finished: dict[str, str]
    ) -> str:
        candidates = [
            v
            for v in self.report.versions
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
            self.event("gate_refused", generation=number, version_id=best.version_id,
                       message=exc.message)  # fmt: skip
            self.ui.phase(f"generation {number}: promotion gate refused; forcing it")
            admin.promote(best.version_id, "production", force=True)
        best.status = "production"
        self.report.promoted.append(best.version_id)
        self.event("promoted", generation=number, version_id=best.version_id)
        self.ui.phase(f"generation {number}: promoted {best.strategy} {best.version_id[:8]}")
        if number < self.settings.generations:
            admin.start_generation(best.version_id)
            self.event("new_generation", base_from=best.version_id, previous_base=base_id)
        return best.version_id


def run_demo(settings: DemoSettings, ui: Ui, make_base: Callable[[int], Path]) -> DemoReport:
    """Run the whole demo; ``make_base(num_classes)`` returns the base model file."""
    started = time.monotonic()
    threads = threads_per_training(settings.concurrency)
    _use_threads(threads)
    settings.output.mkdir(parents=True, exist_ok=True)
    ui.phase(f"preparing {settings.dataset}: {settings.hospitals} hospital shards + benchmark")
    data = prepare_data(
        settings.dataset,
        settings.output / "data",
        datasets_dir=settings.datasets_dir,
        hospitals=settings.hospitals,
        alpha=settings.alpha,
        max_train=settings.max_train,
        max_val=settings.max_val,
        max_test=settings.max_test,
        seed=settings.seed,
    )
    ui.phase("making the base model (pretrained on other MedMNIST sets, cached)")
    base_file = make_base(data.num_classes)
    demo = DemoRun(settings, data, base_file, ui)
    # the references share the cores with the hospitals; two threads, so that both
    # cores keep working once the generations are done
    alone = Background("alone", lambda: train_alone(settings, data, base_file, demo.score, ui))
    central = Background(
        "centralized", lambda: train_centralized(settings, data, base_file, demo.score, ui)
    )
    ui.phase("starting the registry and its worker")
    registry_dir = settings.output / "registry"
    # one interim version per generation, from just over half of the hospitals' vectors,
    # made while the others are still training
    auto_merge_k = max(2, settings.hospitals // 2 + 1)
    with embedded_registry(registry_dir, auto_merge_k=auto_merge_k, threads=threads) as server:
        _drive(demo, server, settings)
    ui.phase("waiting for the reference models (hospitals alone, centralized)")
    demo.report.alone, demo.report.centralized = alone.result(), central.result()
    demo.report.seconds = round(time.monotonic() - started, 1)
    (settings.output / "timeline.json").write_text(json.dumps(demo.report.timeline, indent=2))
    return demo.report


def threads_per_training(concurrency: int) -> int:
    """CPU threads for each model being trained or evaluated at the same time.

    The demo trains ``concurrency`` hospitals, the reference models and the worker's
    jobs side by side; more threads than cores in all makes them wait on each other
    (PyTorch's threads spin while they wait), so the cores are shared out instead.
    """
    return max(1, (os.cpu_count() or 1) // (concurrency + 2))


def _use_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _drive(demo: DemoRun, server: RunningRegistry, settings: DemoSettings) -> None:
    with RegistryClient(server.url, server.admin_token) as admin:
        specs, benchmark_id = demo.setup(admin, server.url)
        for number in range(1, settings.generations + 1):
            demo.generation(number, admin, server.url, specs, benchmark_id)
