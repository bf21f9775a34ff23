"""The asynchronous simulation on real BloodMNIST images: the clock's scheduling, MedVec's
policy against the baselines, and `medvec simulate --async`.

Four hospitals with hand-set clocks (32-image jobs, 0.33 s at 100 images per second):
hospital 0 goes offline at 0.1 s, in the middle of its first job, until 6 s; hospital 1
joins at 0.5 s; hospital 2 is a straggler (10 images per second, 3.2 s a job);
hospital 3 trains all the time. The base is an untrained ResNet-10: these tests are
about who waits for whom and what goes into which version, not about accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hospital_cli.main import main
from medvec.gates import GatePolicy
from medvec.models import ModelSpec, build_model, save_model_file
from medvec.simulation.asynchronous import AsyncConfig, HospitalClock, PolicyConfig
from medvec.simulation.asynchronous.baselines import FedAsync, FedBuff, Synchronous
from medvec.simulation.asynchronous.registry import RegistryServer
from medvec.simulation.asynchronous.report import hospital_checks
from medvec.simulation.asynchronous.world import Server, World
from medvec.simulation.runner import Runner, labels_of, partition_indices
from tests.e2e.tiny import ensure_registered

OFFLINE = (0.1, 6.0)
CLOCKS = [
    HospitalClock(0, speed=100.0, upload_s=0.01, offline=(OFFLINE,), roles=("offline",)),
    HospitalClock(1, speed=100.0, upload_s=0.01, joins_at=0.5, roles=("late joiner",)),
    HospitalClock(2, speed=10.0, upload_s=0.01, roles=("straggler",)),
    HospitalClock(3, speed=100.0, upload_s=0.01),
]
CONFIG = AsyncConfig(
    dataset="bloodmnist", hospitals=4, partition="iid", max_train=400, max_val=100,
    max_test=200, local_steps=2, batch_size=16, compute_rounds=14, curve_points=10,
)  # fmt: skip


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> tuple[Runner, Any]:
    spec = ModelSpec(arch="resnet10", num_classes=8, in_channels=3, image_size=28, stem="imagenet")
    base = save_model_file(
        tmp_path_factory.mktemp("base") / "base.safetensors", build_model(spec), spec
    )
    runner = Runner(CONFIG.point(), base, datasets_dir, "cpu")
    parts = partition_indices(labels_of(runner.train), CONFIG.point())
    return runner, parts


def _run(scene: tuple[Runner, Any], server: Server, config: AsyncConfig = CONFIG) -> dict[str, Any]:
    runner, parts = scene
    return World(config, runner, parts, CLOCKS, server).run()


def _medvec(**policy: Any) -> RegistryServer:
    return RegistryServer("medvec", PolicyConfig(k=2, **policy))


@pytest.mark.slow
def test_the_offline_hospital_blocks_synchronous_rounds_but_no_version_of_medvec(
    scene: tuple[Runner, Any],
) -> None:
    medvec = _run(scene, _medvec())
    sync = _run(scene, Synchronous("sync"))
    assert hospital_checks(medvec, OFFLINE)["versions_while_offline"] >= 3
    # the first round waits for hospital 0's job, paused from 0.1 s to 6 s, not only for
    # the straggler's (3.2 s)
    assert hospital_checks(sync, OFFLINE)["versions_while_offline"] == 0
    assert sync["versions"][0]["time"] > OFFLINE[1]
    # every round takes every hospital present when it opens: the late joiner from round 2
    assert [len(v["inputs"]) for v in sync["versions"]][:2] == [3, 4]
    # hospitals wait in rounds, never in MedVec (beyond being offline or not yet there)
    idle = [sum(h["idle_s"] for h in run["hospitals"]) for run in (medvec, sync)]
    assert idle[0] == pytest.approx(0.0, abs=1e-6) and idle[1] > 10.0


@pytest.mark.slow
def test_stale_work_counts_when_weighted_and_is_lost_when_excluded(
    scene: tuple[Runner, Any],
) -> None:
    weighted = _run(scene, _medvec(stale="weight"))
    checks = hospital_checks(weighted, OFFLINE)
    assert checks["straggler_merged"] == 1.0  # each of its vectors is in a version
    assert checks["late_joiner_lag"] == 0  # in the first merge after its push
    stale = [i for v in weighted["versions"] for i in v["inputs"] if i["staleness"] > 0]
    assert {i["hospital"] for i in stale} >= {2}
    for item in stale:  # samples times (1 + s) ** -0.5
        assert item["weight"] == pytest.approx(100 * (1 + item["staleness"]) ** -0.5)
    # excluding stale vectors leaves out the straggler's first vector: by the time it
    # arrives (3.2 s) the version it was trained from is generations old
    excluded = _run(scene, _medvec(stale="exclude"))
    first = excluded["hospitals"][2]["arrivals"][0][0]
    assert all(i["job"] != first for v in excluded["versions"] for i in v["inputs"])
    assert all(i["staleness"] == 0 for v in excluded["versions"] for i in v["inputs"])


@pytest.mark.slow
def test_every_strategy_spends_the_same_compute(scene: tuple[Runner, Any]) -> None:
    budget = CONFIG.compute
    runs = {
        "medvec": _run(scene, _medvec()),
        "fedasync": _run(scene, FedAsync("fedasync", alpha=0.6, power=0.5)),
        "fedbuff": _run(scene, FedBuff("fedbuff", k=3, lr=1.0, power=0.5)),
        "deadline": _run(scene, Synchronous("sync_deadline", deadline_s=1.0)),
    }
    for name, run in runs.items():
        assert budget <= run["compute"] < budget + 4 * CONFIG.local_images, name
        assert run["curve"][0]["compute"] == 0 and run["curve"][-1]["compute"] <= run["compute"]
    # FedAsync: a version per arrival, mixed in with alpha (1 + s) ** -0.5
    fedasync = runs["fedasync"]
    assert len(fedasync["versions"]) == sum(h["arrived"] for h in fedasync["hospitals"])
    inputs = [v["inputs"][0] for v in fedasync["versions"]]
    assert any(i["staleness"] > 0 for i in inputs)
    for item in inputs:
        assert item["weight"] == pytest.approx(0.6 * (1 + item["staleness"]) ** -0.5)
    # FedBuff: three updates per server step (the last flushes what is left)
    sizes = [len(v["inputs"]) for v in runs["fedbuff"]["versions"]]
    assert set(sizes[:-1]) == {3} and 1 <= sizes[-1] <= 3
    # with a 1 s deadline the straggler never makes it: its work is spent and dropped
    straggler = runs["deadline"]["hospitals"][2]
    assert straggler["arrived"] == 0 and straggler["dropped"] >= 2


@pytest.mark.slow
def test_fedasync_mixes_the_local_model_with_its_weight(scene: tuple[Runner, Any]) -> None:
    """One hospital, one job, no recalibration: the server model is
    ``(1 - a) x + a (x + delta) = x + a delta`` with the hospital's real delta."""
    import torch

    from medvec.vectors import apply_vector, compute_vector

    runner, parts = scene
    config = CONFIG.model_copy(update={"hospitals": 1, "compute_rounds": 1, "calibrate": False})
    alone = [HospitalClock(0, speed=100.0, upload_s=0.01)]
    world = World(config, runner, [parts[0]], alone, FedAsync("fedasync", 0.6, 0.5))
    world.run()
    start = runner.base_state
    tuned = runner.train_on(start, parts[0], 1, config.seed)  # the job's seed: hospital 0, job 0
    expected = apply_vector(start, compute_vector(start, tuned), scale=0.6)
    assert world.production is not None
    for key, value in expected.items():
        torch.testing.assert_close(world.production.state[key], value, msg=key)


@pytest.mark.slow
def test_a_hospital_continues_its_own_work_while_production_has_not_moved(
    scene: tuple[Runner, Any],
) -> None:
    """The registry keeps a hospital's newest vector of a base: its second job against
    the same production continues from where its first ended, so the one vector merged
    holds both jobs' work (a fresh start would have thrown the first away)."""
    import torch

    from medvec.vectors import apply_vector, compute_vector

    runner, parts = scene
    config = CONFIG.model_copy(update={"hospitals": 1, "compute_rounds": 2, "calibrate": False})
    alone = [HospitalClock(0, speed=100.0, upload_s=0.01)]
    server = RegistryServer("medvec", PolicyConfig(k=3, gate=None))  # merges only at the end
    world = World(config, runner, [parts[0]], alone, server)
    run = world.run()
    assert run["hospitals"][0]["continued"] == [[1, 0]]
    assert [[i["job"] for i in v["inputs"]] for v in run["versions"]] == [[1]]
    assert hospital_checks(run, None)["unmerged_share"] == 0.0  # job 0 is inside job 1
    start = runner.base_state
    first = runner.train_on(start, parts[0], 1, config.seed)  # hospital 0, job 0
    second = runner.train_on(first, parts[0], 1, config.seed + 1000)  # job 1
    expected = apply_vector(start, compute_vector(start, second))
    assert world.production is not None
    for key, value in expected.items():
        torch.testing.assert_close(world.production.state[key], value, msg=key)
    # the baselines keep every update apart: the same hospital under FedBuff starts fresh
    fedbuff = World(config, runner, [parts[0]], alone, FedBuff("fedbuff", k=3, lr=1.0, power=0.5))
    assert fedbuff.run()["hospitals"][0]["continued"] == []


@pytest.mark.slow
def test_a_stale_vector_replaced_by_one_of_a_newer_base_is_still_merged(
    scene: tuple[Runner, Any],
) -> None:
    """The late joiner (0.32 s a job) pulls generation 0 at 1.0 s; the two slow hospitals'
    vectors make generation 1 at 1.28 s, so its first vector arrives stale (1.32 s). It
    pulls generation 1 and pushes again (1.64 s) before the slow ones push (2.56 s): the
    registry keeps both rows (supersession is per base), and the next merge takes both,
    each weighted by its own staleness. Before, the second replaced the first and the
    late joiner's first work was never merged."""
    runner, parts = scene
    clocks = [
        HospitalClock(0, speed=25.0, upload_s=0.0),
        HospitalClock(1, speed=100.0, upload_s=0.0, joins_at=1.0, roles=("late joiner",)),
        HospitalClock(2, speed=25.0, upload_s=0.0),
    ]
    config = CONFIG.model_copy(update={"hospitals": 3, "compute_rounds": 3, "calibrate": False})
    server = RegistryServer("medvec", PolicyConfig(k=2, gate=None))
    run = World(config, runner, parts[:3], clocks, server).run()
    (first, _, first_gen), (_, _, second_gen), *_ = run["hospitals"][1]["arrivals"]
    assert (first_gen, second_gen) == (0, 1)  # replaced by a vector of a newer base
    assert hospital_checks(run, None)["late_joiner_lag"] == 0
    merge = next(v for v in run["versions"] if any(i["job"] == first for i in v["inputs"]))
    assert merge["base_version"] == 1  # the first merge after its push
    # beside its newest vector of generation 1 (which continues the second job), each
    # weighted by its own staleness
    own = sorted((i["staleness"], i["weight"]) for i in merge["inputs"] if i["hospital"] == 1)
    assert [s for s, _ in own] == [0, 1] and own[0][1] > own[1][1]


@pytest.mark.slow
def test_every_merge_starts_a_generation_while_the_gate_keeps_production(
    scene: tuple[Runner, Any],
) -> None:
    """A gate no candidate passes (every class's sensitivity at least 1): production
    stays the base, and with generations from promoted versions every job pulls it and
    every merge is of it. With ``generations = "merged"`` each merge is the next base:
    hospitals pull unpromoted versions, each merge is made on the one before, and the
    curve (production) still never moves."""
    never = GatePolicy(sensitivity_floor=1.0)
    config = CONFIG.model_copy(update={"compute_rounds": 4})
    runs = {
        mode: _run(scene, _medvec(gate=never, generations=mode), config)
        for mode in ("promoted", "merged")
    }
    for run in runs.values():
        assert not any(v["promoted"] for v in run["versions"])
        assert {p["version"] for p in run["curve"]} == {0}
    promoted, merged = runs["promoted"], runs["merged"]
    assert {v["base_version"] for v in promoted["versions"]} == {0}
    pulled = {i["pulled_version"] for v in promoted["versions"] for i in v["inputs"]}
    assert pulled == {0}
    bases = [v["base_version"] for v in merged["versions"]]
    made = [v["version"] for v in merged["versions"]]
    assert len(made) >= 3 and bases == [0, *made[:-1]]  # each on the one before
    assert [v["generation"] for v in merged["versions"]] == list(range(1, len(made) + 1))
    pulled = {i["pulled_version"] for v in merged["versions"] for i in v["inputs"]}
    assert pulled & set(made)  # hospitals trained from versions never promoted


def test_cli_async_defaults_are_the_configs() -> None:
    """The CLI spells the asynchronous defaults out (so `--help` imports no torch)."""
    from hospital_cli.commands.simulate import ASYNC_DEFAULTS, POLICY_DEFAULTS

    config, policy = AsyncConfig(), PolicyConfig()
    assert {k: getattr(config, k) for k in ASYNC_DEFAULTS} == ASYNC_DEFAULTS
    assert {k: getattr(policy, k) for k in POLICY_DEFAULTS} == POLICY_DEFAULTS


@pytest.mark.slow
def test_simulate_async_writes_the_figure_and_the_record(
    tmp_path: Path, datasets_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arch = ensure_registered()
    out = tmp_path / "sim"
    main(
        [
            "simulate", "--async", "--dataset", "pneumoniamnist", "--hospitals", "4",
            "--arch", arch, "--stem", "auto", "--max-train", "200", "--max-test", "100",
            "--rounds", "3", "--local-steps", "2", "--pretrain-samples", "64",
            "--pretrain-steps", "2", "--output", str(out), "--datasets-dir", str(datasets_dir),
            "--device", "cpu", "--json",
        ]
    )  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert [r["strategy"] for r in printed["summary"]] == [
        "medvec", "sync", "sync_deadline", "fedasync", "fedbuff",
    ]  # fmt: skip
    record = json.loads((out / "async.json").read_text())
    assert record["config"]["hospitals"] == 4 and set(record["runs"]) == {
        r["strategy"] for r in printed["summary"]
    }
    for run in record["runs"].values():
        assert run["curve"] and run["hospitals"] and "idle_s" in run["hospitals"][0]
    assert (out / "async.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
