"""The demo's two schedules on the real embedded registry (``medvec-server serve --worker``)
and real BloodMNIST images, small: 4 hospitals of 100 images (IID), an untrained
ResNet-10 base, no reference models; 4 generations' work asynchronously, 2 generations
in lockstep.

The asynchronous default has no barrier (the registry merges and promotes while the
straggler is still on its first job), takes the late joiner's work, and lets a hospital
continue from its own model while production stands still; ``--lockstep`` keeps the
generations that wait for every hospital, merged and promoted by the admin. These tests
are about who waits for whom and what goes into which version, not about accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from hospital_cli.demo.hospital import LocalRound
from hospital_cli.demo.report import hospital_checks, summary
from hospital_cli.demo.run import run_demo
from hospital_cli.demo.state import DemoReport, DemoSettings, Ui
from hospital_cli.errors import CliError
from hospital_cli.local import TrainRequest, train_vector
from medvec.hashing import sha256_file
from medvec.models import ModelSpec, build_model, save_model_file
from medvec.training_config import recipe_config
from medvec.vectors import load_vector
from tests.cli.tiny import make_base as make_tiny_base

pytestmark = pytest.mark.slow


def _settings(output: Path, datasets_dir: Path, *, lockstep: bool) -> DemoSettings:
    return DemoSettings(
        output=output,
        hospitals=4,
        generations=2 if lockstep else 4,
        alpha=None,  # IID: honest hospitals of an untrained base stay clear of screening
        max_train=400,
        max_val=100,
        max_test=200,
        # one training slot, and pauses between jobs, leave the registry a core of this
        # machine's two: its first promotion comes while the hospitals still have budget
        # to train on it, as it would on a registry's own machine (with both slots busy,
        # the budget was spent before the registry promoted, on a loaded CI machine)
        max_delay=1.5,
        concurrency=1,
        strategies=("weighted_mean",),
        lockstep=lockstep,
        # the default 10 outlasts the registry's first merge; in lockstep every generation
        # waits for the straggler, so a milder one keeps the test short
        straggler_slowdown=3.0 if lockstep else 10.0,
        references=False,
        datasets_dir=datasets_dir,
        device="cpu",
    )


def _untrained_base(folder: Path) -> Callable[[int], Path]:
    def make(num_classes: int) -> Path:
        spec = ModelSpec(arch="resnet10", num_classes=num_classes, in_channels=3, image_size=28)
        torch.manual_seed(0)
        model = build_model(spec)
        return save_model_file(folder / "base.safetensors", model, spec, provenance={})

    return make


def _run(tmp: Path, datasets_dir: Path, *, lockstep: bool) -> DemoReport:
    settings = _settings(tmp / "demo", datasets_dir, lockstep=lockstep)
    return run_demo(settings, Ui(), _untrained_base(tmp))


@pytest.fixture(scope="module")
def asynchronous(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> DemoReport:
    return _run(tmp_path_factory.mktemp("async"), datasets_dir, lockstep=False)


@pytest.fixture(scope="module")
def lockstep(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> DemoReport:
    return _run(tmp_path_factory.mktemp("lockstep"), datasets_dir, lockstep=True)


def _role(report: DemoReport, role: str) -> str:
    (name,) = [n for n, pace in report.paces.items() if pace["role"] == role]
    return name


def _jobs(report: DemoReport, hospital: str) -> list[LocalRound]:
    return sorted((r for r in report.locals if r.hospital == hospital), key=lambda r: r.job)


def test_asynchronous_hospitals_wait_for_nobody(asynchronous: DemoReport) -> None:
    report = asynchronous
    assert report.registry["MEDVEC_AUTO_PROMOTE"] == "true"
    assert report.registry["MEDVEC_STALE_POLICY"] == "weight"
    assert report.registry["MEDVEC_GATE_CLASS_METRICS"] == "[]"
    assert all(r.vector_status == "validated" for r in report.locals), report.locals
    straggler = _role(report, "straggler")
    first_push = _jobs(report, straggler)[0].pushed_s
    # no barrier: the registry merged, and promoted through its gate, while the straggler
    # was still on its first job, and the other hospitals pushed more than once meanwhile
    before = [v for v in report.versions if v.created_s is not None and v.created_s < first_push]
    assert before and all(v.trigger == "auto-merge" for v in before), report.versions
    promoted = [p for p in report.production if p["t"] < first_push]
    assert promoted and all(p["by"] == "system:auto-promote" for p in promoted)
    early = [r for r in report.locals if r.hospital != straggler and r.pushed_s < first_push]
    assert len(early) > len({r.hospital for r in early}), early
    # the promotions made generations, and later jobs trained on them
    assert report.promoted[-1] == summary(report)["promoted_version"]
    # the registry's log holds the worker's decisions, not only uvicorn's requests
    log = (report.settings.output / "registry" / "server.log").read_text()
    assert "worker.policy: auto-merge: job" in log
    made = {
        e["base_id"]: e["base_from"]
        for e in report.timeline
        if e["event"] == "new_generation" and e["base_from"] in report.promoted
    }
    assert any(r.base_id in made for r in report.locals), (made, report.locals)
    assert max(r.generation for r in report.locals) >= 2
    # the budget is the lockstep schedule's work: every hospital's images each generation,
    # the late joiner's from the third (it joins at a third of the run); every job
    # started within it is pushed, less than one job per hospital more
    assert report.budget_images == 400 * 4 - 200
    assert report.budget_images <= report.images_trained < report.budget_images + 4 * 100


def test_the_late_joiner_joins_late_and_its_work_is_merged(asynchronous: DemoReport) -> None:
    report = asynchronous
    late = _role(report, "late joiner")
    jobs = _jobs(report, late)
    assert jobs, "the late joiner pushed nothing"
    trained_before = sum(
        r.samples * r.epochs for r in report.locals if r.pushed_s <= jobs[0].started_s
    )
    assert trained_before >= report.budget_images / 3
    checks = hospital_checks(report)
    assert checks["hospitals"][late]["merged"] >= 1, (checks, report.versions)
    # the straggler's one job arrived stale, after the registry moved on: the end of the
    # run (the policy's next tick) merged it, and no validated vector was left out
    straggler = _role(report, "straggler")
    assert checks["hospitals"][straggler]["merged"] >= 1, (checks, report.versions)


def test_a_hospital_continues_its_own_model_while_production_stands_still(
    asynchronous: DemoReport,
) -> None:
    report = asynchronous
    continued = 0
    for name in report.paces:
        # a job that failed (a pull or push refused on a loaded machine) leaves the
        # hospital's last pushed model as it was: continuation is judged against that one
        jobs = [r for r in _jobs(report, name) if r.error is None]
        for previous, job in zip(jobs, jobs[1:], strict=False):
            # from its own last model exactly when the base it pulls is the one it pushed
            # its last vector against; from the new base once production moved
            assert job.continued == (job.base_id == previous.base_id), (previous, job)
            continued += job.continued
        for job in jobs:
            vector = report.settings.output / "hospitals" / name / f"vector-{job.job}.safetensors"
            _, meta = load_vector(vector)
            assert meta.base_id == job.base_id  # always against the base it pulled
            # the sha256 of the model file it continued (the demo keeps only the last one;
            # tests/cli/test_train_continue.py checks the value)
            origin = meta.training.get("continued_from")
            assert (origin is not None) == job.continued, (job, origin)
            assert origin is None or len(origin) == 64
    assert continued, "no hospital pushed twice against the same production"


def test_lockstep_keeps_the_generations_with_a_barrier(lockstep: DemoReport) -> None:
    report = lockstep
    settings = report.settings
    assert report.registry["MEDVEC_AUTO_PROMOTE"] == "false"
    late = _role(report, "late joiner")
    for generation in range(1, settings.generations + 1):
        rounds = [r for r in report.locals if r.generation == generation]
        present = {r.hospital for r in rounds}
        # everyone every generation, the late joiner from the one opening after a third
        expected = set(report.paces) - ({late} if generation == 1 else set())
        assert present == expected, (generation, present)
        assert all(r.vector_status == "validated" and not r.continued for r in rounds)
        # the barrier: the admin's merges come after the generation's last push
        last_push = max(r.pushed_s for r in rounds)
        admin = [v for v in report.versions if v.generation == generation and v.trigger == "admin"]
        assert admin and all(v.created_s is not None and v.created_s > last_push for v in admin)
    # one promotion per generation, by the admin, of its admin merge best on validation
    assert len(report.promoted) == len(report.production) == settings.generations
    assert all(not p["by"].startswith("system:") for p in report.production)
    assert [p["version_id"] for p in report.production] == report.promoted
    assert report.images_trained == report.budget_images == 400 * 2 - 100


def test_a_continued_job_starts_from_the_model_it_names(tmp_path: Path, datasets_dir: Path) -> None:
    """``TrainRequest.continue_from``: the vector is still against the base, and holds the
    earlier job's work (with a learning rate too small to move the weights, the second
    vector's weights are the first one's), and a model of another base is refused."""
    data = tmp_path / "data.npz"
    with np.load(datasets_dir / "bloodmnist.npz") as archive:
        np.savez(data, train_images=archive["train_images"][:64],
                 train_labels=archive["train_labels"][:64])  # fmt: skip
    base = make_tiny_base(tmp_path / "base.safetensors", num_classes=8)
    record = {"id": "b", "sha256": sha256_file(base)}

    def job(number: int, lr: float, start: Path | None) -> tuple[dict[str, torch.Tensor], Path]:
        model = tmp_path / f"model-{number}.safetensors"
        request = TrainRequest(
            base=base, base_record=record, data=data, out=tmp_path / f"v{number}.safetensors",
            hospital="h", recipe=recipe_config("adam", epochs=1, lr=lr, batch_size=16),
            val_fraction=0.0, device="cpu", save_model=model, continue_from=start,
        )  # fmt: skip
        outcome = train_vector(request)
        tensors, meta = load_vector(outcome.vector)
        assert meta.base_sha256 == record["sha256"]
        return tensors, model

    first, model = job(1, 1e-2, None)
    second, _ = job(2, 1e-12, model)
    weights = [k for k in first if k.endswith("weight")]
    assert max(float(first[k].abs().max()) for k in weights) > 1e-3
    for key in weights:
        assert torch.allclose(second[key], first[key], atol=1e-6), key

    other = make_tiny_base(tmp_path / "other.safetensors", num_classes=8, seed=1)
    request = TrainRequest(
        base=other, base_record={"id": "o", "sha256": sha256_file(other)}, data=data,
        out=tmp_path / "v3.safetensors", hospital="h", val_fraction=0.0, continue_from=model,
    )  # fmt: skip
    with pytest.raises(CliError, match="was fine-tuned from base .*, not from this base"):
        train_vector(request)
