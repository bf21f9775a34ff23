"""The demo's orchestration: registry up, hospitals at their own pace, merges, promotions.

Two schedules on the same registry, data and hospitals:

- **asynchronous** (the default, ``hospital_cli.demo.asynchronous``): every hospital
  loops on its own until the budget is spent; the registry's auto-merge policy makes
  the versions and its promotion gate promotes them; each promotion starts a
  generation, which hospitals pull from their next job on. Nobody waits for anybody.
- **lockstep** (``--lockstep``, ``hospital_cli.demo.lockstep``): generations with a
  barrier; when a generation's last hospital has pushed, the admin merges with every
  strategy, promotes the version best on validation and starts the next generation.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hospital_cli.client import RegistryClient
from hospital_cli.demo.data import DemoData, prepare_data
from hospital_cli.demo.hospital import Hospital, HospitalSpec, Training
from hospital_cli.demo.pace import hospital_paces, lockstep_images
from hospital_cli.demo.reference import Background, Scorer, train_alone, train_centralized
from hospital_cli.demo.server import embedded_registry, registry_policy
from hospital_cli.demo.state import DemoReport, DemoSettings, MergedVersion, Ui, pick_metrics
from hospital_cli.errors import CliError
from hospital_cli.waiting import await_status

JOB_TIMEOUT_S = 900.0
POLL_S = 1.0
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
        self.hospitals_started = time.monotonic()
        self.score = Scorer(data.benchmark, settings.device)
        self.paces = hospital_paces(
            settings.hospitals,
            straggler_slowdown=settings.straggler_slowdown,
            late_join=settings.late_join,
            seed=settings.seed,
        )
        self.report.budget_images = lockstep_images(
            data.shard_sizes, self.paces, settings.generations, settings.epochs
        )

    def clock(self) -> float:
        """Seconds after the hospitals started (before: after the run started)."""
        return round(time.monotonic() - self.hospitals_started, 2)

    def event(self, kind: str, **info: Any) -> None:
        self.report.timeline.append({"t": self.clock(), "event": kind, **info})

    def start_hospitals(self) -> None:
        """The schedule's time origin: every time in the report counts from here (the
        set-up's events before it become negative)."""
        now = time.monotonic()
        for event in self.report.timeline:
            event["t"] = round(event["t"] - (now - self.hospitals_started), 2)
        self.hospitals_started = now
        self.event("hospitals_start")

    def since_start(self, stamp: str | None) -> float | None:
        """A registry timestamp (ISO 8601) as seconds after the hospitals started."""
        if not stamp:
            return None
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        wall_at_start = time.time() - (time.monotonic() - self.hospitals_started)
        return round(moment.timestamp() - wall_at_start, 2)

    def hospitals(self, specs: list[HospitalSpec], server: str) -> list[Hospital]:
        settings = self.settings
        training = Training(
            epochs=settings.epochs,
            lr=settings.lr,
            batch_size=settings.batch_size,
            seed=settings.seed,
            max_delay=settings.max_delay,
            device=settings.device,
        )
        slots = threading.Semaphore(settings.concurrency)
        score = self.score if settings.score_locals else None
        self.report.paces = {
            spec.name: asdict(pace) for spec, pace in zip(specs, self.paces, strict=True)
        }
        return [
            Hospital(
                spec,
                server,
                pace,
                training,
                slots=slots,
                clock=self.clock,
                status=self.ui.hospital,
                score=score,
                index=index,
            )
            for index, (spec, pace) in enumerate(zip(specs, self.paces, strict=True))
        ]

    # -- registry set-up -----------------------------------------------------------
    def setup(self, admin: RegistryClient) -> tuple[list[HospitalSpec], str]:
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
        return specs, str(benchmark["id"])

    def await_screening(self, admin: RegistryClient, vector_ids: list[str]) -> None:
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

    def watch(self, admin: RegistryClient, base_id: str | None, seen: set[str]) -> None:
        """Note auto-merged versions (of ``base_id``, or of any base) as they appear (the
        policy fires on arrivals)."""
        try:
            versions = admin.list_versions()
        except Exception:  # the registry is busy; look again at the next tick
            return
        for version in versions:
            vid = str(version.get("id"))
            if vid not in seen and base_id in (None, str(version.get("base_id"))):
                seen.add(vid)
                self.event("version", version_id=vid, strategy=version.get("strategy"))
                self.ui.phase(f"new version {vid[:8]} ({version.get('strategy')}) from arrivals")

    def await_evaluations(self, admin: RegistryClient, base_id: str | None) -> None:
        """Wait until every version (of ``base_id``, or of any base) is settled."""
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            versions = [
                v for v in admin.list_versions() if base_id in (None, str(v.get("base_id")))
            ]
            waiting = [v for v in versions if not _settled(admin.version_evaluations(v["id"]))]
            self.ui.phase(f"evaluating: {len(versions) - len(waiting)}/{len(versions)} versions")
            if not waiting:
                return
            time.sleep(POLL_S)
        raise CliError(f"evaluations did not finish in {JOB_TIMEOUT_S:.0f} s")

    def merged_version(
        self, admin: RegistryClient, version: dict[str, Any], generation: int, trigger: str
    ) -> MergedVersion:
        """A registry version as the report records it, with its evaluations."""
        vid = str(version["id"])
        inputs = version.get("inputs") or version.get("lineage") or []
        evaluations = admin.version_evaluations(vid)
        return MergedVersion(
            generation=generation,
            version_id=vid,
            strategy=str(version.get("strategy")),
            trigger=trigger,
            params=dict(version.get("params") or {}),
            vectors=len(inputs),
            metrics=pick_metrics(evaluations, "test"),
            val_metrics=pick_metrics(evaluations, "val"),
            status=str(version.get("status")),
            inputs=[str(i.get("vector_id")) for i in inputs if isinstance(i, dict)],
            created_s=self.since_start(version.get("created_at")),
        )

    def production_history(self, admin: RegistryClient) -> list[dict[str, Any]]:
        """Every promotion to production, oldest first, from the registry's audit log:
        when (seconds after the hospitals started), which version, by whom."""
        events = admin.audit(action="version.promoted", limit=1000)
        history = [
            {
                "t": self.since_start(e.get("created_at")),
                "version_id": e.get("target_id"),
                "by": e.get("actor"),
                "forced": bool((e.get("payload") or {}).get("forced")),
            }
            for e in events
            if (e.get("payload") or {}).get("stage") == "production"
        ]
        return sorted(history, key=lambda h: h["t"] or 0.0)


def pretrained_base(settings: DemoSettings) -> Callable[[int], Path]:
    """``make_base(num_classes)`` for :func:`run_demo`: the base pretrained on the other
    MedMNIST sets (or loaded from ``settings.checkpoint``), cached once per machine."""
    from hospital_cli.bases import pretrained_cache
    from medvec.models import ModelSpec
    from medvec.pretrain import PretrainConfig, ensure_base, pretrain_arch

    pretrain = PretrainConfig(
        arch=pretrain_arch(settings.arch),
        stem=settings.stem,
        steps=settings.pretrain_steps,
        max_samples=settings.pretrain_samples,
        seed=settings.seed,
    ).excluding(settings.dataset)

    def make_base(num_classes: int) -> Path:
        spec = ModelSpec(
            arch=settings.arch,
            num_classes=num_classes,
            in_channels=3,
            image_size=28,
            stem=settings.stem,
        )
        return ensure_base(
            spec,
            pretrained_cache(),
            config=pretrain,
            checkpoint=settings.checkpoint,
            datasets_dir=settings.datasets_dir,
            device=settings.device,
        )

    return make_base


def run_demo(settings: DemoSettings, ui: Ui, make_base: Callable[[int], Path]) -> DemoReport:
    """Run the whole demo; ``make_base(num_classes)`` returns the base model file."""
    from hospital_cli.demo.asynchronous import run_asynchronous
    from hospital_cli.demo.lockstep import run_lockstep

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
    alone = central = None
    if settings.references:
        # the references share the cores with the hospitals; two threads, so that both
        # cores keep working once the hospitals are done
        alone = Background("alone", lambda: train_alone(settings, data, base_file, demo.score, ui))
        central = Background(
            "centralized", lambda: train_centralized(settings, data, base_file, demo.score, ui)
        )
    ui.phase("starting the registry and its worker")
    auto_promote = not settings.lockstep
    k = settings.auto_merge_k_value()
    demo.report.registry = registry_policy(k, auto_promote=auto_promote)
    registry_dir = settings.output / "registry"
    with (
        embedded_registry(
            registry_dir, auto_merge_k=k, threads=threads, auto_promote=auto_promote
        ) as server,
        RegistryClient(server.url, server.admin_token) as admin,
    ):
        specs, benchmark_id = demo.setup(admin)
        hospitals = demo.hospitals(specs, server.url)
        if settings.lockstep:
            run_lockstep(demo, admin, hospitals, benchmark_id)
        else:
            run_asynchronous(demo, admin, hospitals)
    if alone is not None and central is not None:
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
