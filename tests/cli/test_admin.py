"""`medvec admin ...` against the live registry: hospitals, tokens, bases, benchmarks,
merges, versions, promotion and rollback; then a hospital pulls the production model."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medvec.data import load_medmnist
from medvec.hashing import sha256_file
from medvec.models import load_model_file
from tests.cli.conftest import CliResult, Registry, assert_one_line_error, login
from tests.cli.test_push_pull import make_vector
from tests.cli.tiny import make_base

Cli = Callable[..., CliResult]


def _ok(result: CliResult) -> Any:
    assert result.exit_code == 0, result.stderr
    return result.json()


def _evaluated(cli: Cli, version_id: str, timeout: float = 120.0) -> Any:
    """The version as `medvec admin versions` lists it, once its evaluations completed."""
    deadline = time.monotonic() + timeout
    while True:
        row = next(v for v in _ok(cli("admin", "versions", "--json")) if v["id"] == version_id)
        if row["evaluations"] and all(e["status"] == "completed" for e in row["evaluations"]):
            return row
        assert time.monotonic() < deadline, row["evaluations"]
        time.sleep(0.5)


def _assert_onnx_matches_pytorch(onnx_path: Path, model_path: Path, datasets_dir: Path) -> None:
    """onnxruntime's logits on 128 real test images equal PyTorch's to 1e-4."""
    import onnxruntime as ort
    import torch

    model, spec = load_model_file(model_path)
    dataset = load_medmnist("pneumoniamnist", "test", datasets_dir, in_channels=spec.in_channels)
    images = torch.stack([dataset[i][0] for i in range(128)])
    with torch.no_grad():
        expected = model.eval()(images).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": images.numpy()})
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


@pytest.fixture()
def admin_cli(cli: Cli, registry: Registry) -> Cli:
    login(cli, registry, registry.admin_token)
    return cli


def test_hospitals_and_tokens(admin_cli: Cli, registry: Registry) -> None:
    cli = admin_cli
    hospital = _ok(cli("admin", "hospitals", "create", "st-marys-admin-test", "--json"))
    listed = _ok(cli("admin", "hospitals", "list", "--json"))
    assert hospital["id"] in {h["id"] for h in listed}

    minted = _ok(
        cli("admin", "tokens", "create", "--name", "ct", "--hospital", "st-marys-admin-test",
            "--json")
    )  # fmt: skip
    assert minted["token"].startswith("mv_") and minted["hospital_id"] == hospital["id"]
    tokens = _ok(cli("admin", "tokens", "list", "--json"))
    assert minted["id"] in {t["id"] for t in tokens}
    assert minted["token"] not in str(tokens)  # secrets are shown once only

    who = cli("whoami", "--json", "--token", minted["token"])
    assert _ok(who)["hospital_name"] == "st-marys-admin-test"
    revoked = cli("admin", "tokens", "revoke", minted["id"])
    assert revoked.exit_code == 0, revoked.stderr
    assert_one_line_error(cli("whoami", "--token", minted["token"]), 4)

    unknown = cli("admin", "tokens", "create", "--name", "x", "--hospital", "nowhere")
    assert_one_line_error(unknown, 1, "no hospital 'nowhere'")
    table = cli("admin", "hospitals", "list")
    assert table.exit_code == 0 and "st-marys-admin-test" in table.stdout


def test_privacy_budget_is_set_shown_and_cleared(admin_cli: Cli) -> None:
    cli = admin_cli
    hospital = _ok(cli("admin", "hospitals", "create", "budget-test", "--json"))
    budget = "admin", "hospitals", "privacy-budget", "budget-test"
    ledger = _ok(cli(*budget, "--epsilon", "8", "--delta", "1e-6", "--json"))
    assert ledger["hospital_id"] == hospital["id"]
    assert (ledger["budget_epsilon"], ledger["budget_delta"]) == (8.0, 1e-6)
    assert (ledger["epsilon"], ledger["vectors"]) == (0.0, 0)
    shown = cli(*budget)
    assert shown.exit_code == 0 and "budget epsilon 8 at delta 1e-06" in shown.stdout
    assert _ok(cli(*budget, "--clear", "--json"))["budget_epsilon"] is None
    assert_one_line_error(cli(*budget, "--epsilon", "0"), 6)
    assert_one_line_error(
        cli("admin", "hospitals", "privacy-budget", "nowhere", "--epsilon", "1"), 1, "nowhere"
    )


def test_remove_a_hospital_revokes_its_tokens_and_is_audited(admin_cli: Cli) -> None:
    cli = admin_cli
    hospital = _ok(cli("admin", "hospitals", "create", "leaving-test", "--json"))
    minted = _ok(
        cli("admin", "tokens", "create", "--name", "leaving", "--hospital", "leaving-test",
            "--json")
    )  # fmt: skip
    unconfirmed = cli("admin", "hospitals", "remove", "leaving-test")  # no answer: aborted
    assert unconfirmed.exit_code != 0
    assert _ok(cli("whoami", "--json", "--token", minted["token"]))["hospital_id"] == hospital["id"]

    removed = _ok(
        cli("admin", "hospitals", "remove", "leaving-test", "--reason", "left", "--yes", "--json")
    )
    assert removed["id"] == hospital["id"] and removed["removed_at"]
    assert_one_line_error(cli("whoami", "--token", minted["token"]), 4)
    listed = {h["id"]: h for h in _ok(cli("admin", "hospitals", "list", "--json"))}
    assert listed[hospital["id"]]["removed_at"] == removed["removed_at"]
    events = _ok(cli("admin", "audit", "--action", "hospital.removed", "--json"))
    mine = [e for e in events if e["target_id"] == hospital["id"]]
    assert mine and mine[0]["payload"]["reason"] == "left"
    assert mine[0]["payload"]["revoked_tokens"] == [minted["id"]]
    again = cli("admin", "tokens", "create", "--name", "back", "--hospital", hospital["id"])
    assert_one_line_error(again, 1, "was removed")


def test_register_base_and_benchmark(admin_cli: Cli, tmp_path: Path, datasets_dir: Path) -> None:
    cli = admin_cli
    base = make_base(tmp_path / "other-base.safetensors", seed=3)
    record = _ok(cli("admin", "register-base", base, "--name", "other-base", "--json"))
    assert record["sha256"] == sha256_file(base)
    bases = _ok(cli("base", "list", "--json"))
    assert record["id"] in {b["id"] for b in bases}

    arrays = np.load(datasets_dir / "pneumoniamnist.npz")
    bench = tmp_path / "bench.npz"
    np.savez(
        bench,
        **{f"{split}_{kind}": arrays[f"{split}_{kind}"][:100]
           for split in ("val", "test") for kind in ("images", "labels")},
    )  # fmt: skip
    registered = _ok(cli("admin", "register-benchmark", bench, "--name", "pneu-100", "--json"))
    assert registered["name"] == "pneu-100"
    assert _ok(cli("admin", "versions", "--json")) is not None

    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not an npz")
    # the registry refuses a broken upload (422): exit 6, its reason on one line
    assert_one_line_error(cli("admin", "register-benchmark", broken, "--name", "x"), 6, ".npz")
    assert_one_line_error(cli("admin", "register-base", broken, "--name", "x"), 6)


@pytest.mark.slow
def test_merge_promote_pull_and_rollback(
    admin_cli: Cli, registry: Registry, base_record: dict[str, Any], tmp_path: Path,
    datasets_dir: Path,
) -> None:  # fmt: skip
    from tests.cli.conftest import new_hospital

    cli = admin_cli
    pushed, hospitals = [], []
    for seed in range(3):
        hospital = new_hospital(registry)
        hospitals.append(hospital)
        vector = make_vector(tmp_path / f"v{seed}.safetensors", base_record, hospital.name,
                             seed=10 + seed)  # fmt: skip
        result = cli("push", vector, "--token", hospital.token, "--json")
        pushed.append(_ok(result)["vector"])
    assert all(v["status"] == "validated" for v in pushed)

    arrays = np.load(datasets_dir / "pneumoniamnist.npz")
    bench = tmp_path / "bench.npz"
    np.savez(bench, **{k: arrays[k][:64] for k in arrays.files})
    benchmark = _ok(cli("admin", "register-benchmark", bench, "--name", "pneu-64", "--json"))

    jobs = []
    for _ in range(2):
        job = _ok(
            cli("admin", "merge", "--base", base_record["id"], "--strategy", "weighted_mean",
                "--benchmark", benchmark["id"], "--wait", "120", "--json")
        )  # fmt: skip
        assert job["status"] == "succeeded", job
        jobs.append(job)
    assert jobs[0]["version_id"] == jobs[1]["version_id"]  # the same inputs: the same version
    version_id = jobs[0]["version_id"]

    row = _evaluated(cli, version_id)
    assert row["status"] == "candidate"
    assert row["evaluations"] and "accuracy" in row["evaluations"][0]["metrics"]
    again = _ok(cli("admin", "evaluate", version_id, "--benchmark", benchmark["id"], "--json"))
    assert (again["split"], again["status"], again["attempts"]) == ("test", "queued", 0)
    rerun = next(e for e in _evaluated(cli, version_id)["evaluations"] if e["split"] == "test")
    assert rerun["attempts"] == 1 and rerun["metrics"]["n"] == 64
    missing = cli("admin", "evaluate", version_id, "--benchmark", "no-such-benchmark")
    assert_one_line_error(missing, 5, "no benchmark no-such-benchmark")
    assert "accuracy" in cli("admin", "versions").stdout

    promoted = _ok(cli("admin", "promote", version_id, "--stage", "production", "--json"))
    assert promoted["status"] == "production"

    hospital = new_hospital(registry)
    target = tmp_path / "prod.safetensors"
    pulled = _ok(cli("pull", "--production", "-o", target, "--token", hospital.token, "--json"))
    assert pulled["sha256"] == sha256_file(target) == pulled["version"]["sha256"]
    card = Path(pulled["card_path"])
    assert card == tmp_path / "prod.card.md"
    card_text = card.read_text()
    assert f"# Model card: version {version_id}" in card_text
    assert "95% bootstrap interval" in card_text and "## Known limitations" in card_text
    assert hospitals[0].name not in card_text  # a hospital reader sees no hospital names
    onnx_target = tmp_path / "deploy" / "prod.onnx"
    exported = _ok(
        cli("pull", "--format", "onnx", "-o", onnx_target, "--token", hospital.token, "--json")
    )
    assert exported["onnx_path"] == str(onnx_target) and onnx_target.is_file()
    assert exported["path"] == str(onnx_target.with_suffix(".safetensors"))
    assert sha256_file(exported["path"]) == pulled["sha256"]
    _assert_onnx_matches_pytorch(onnx_target, target, datasets_dir)
    status = _ok(cli("status", "--token", hospital.token, "--json"))
    assert status["production"]["version"]["id"] == version_id
    assert status["vectors"] == []  # a hospital sees only its own vectors
    contributor = _ok(cli("status", "--token", hospitals[0].token, "--json"))
    (mine,) = contributor["vectors"]
    assert mine["id"] == pushed[0]["id"]
    assert mine["in_production"] is True and mine["merged_into"] == version_id
    assert mine["production_weight"] > 0
    assert contributor["production"]["evaluations"]
    assert contributor["privacy"]["vectors"] == 1 and contributor["privacy"]["epsilon"] is None
    table = cli("status", "--token", hospitals[0].token)
    assert table.exit_code == 0 and "vectors" in table.stdout
    assert "privacy: epsilon unbounded" in " ".join(table.stderr.split())  # notes: stderr

    other = _ok(
        cli("admin", "merge", "--base", base_record["id"], "--strategy", "task_arithmetic",
            "--params", '{"lambda": 0.5}', "--wait", "120", "--json")
    )  # fmt: skip
    assert other["status"] == "succeeded" and other["version_id"] != version_id
    by_id = _ok(cli("pull", "--version", other["version_id"], "-o", tmp_path / "o.st", "--json"))
    assert by_id["sha256"] == sha256_file(tmp_path / "o.st") != pulled["sha256"]
    hidden = cli("pull", "--version", other["version_id"], "--token", hospital.token)
    assert_one_line_error(hidden, hidden.exit_code)  # hospitals: production only
    assert hidden.exit_code in (4, 5)
    forced = cli("admin", "promote", other["version_id"], "--stage", "production", "--force")
    assert forced.exit_code == 0, forced.stderr
    assert _ok(cli("pull", "--json", "-o", tmp_path / "p2.st"))["version"]["id"] != version_id
    back = _ok(cli("admin", "rollback", "--json"))
    assert back["id"] == version_id
    again = _ok(cli("pull", "--json", "-o", tmp_path / "p3.st"))
    assert again["version"]["id"] == version_id
    assert sha256_file(tmp_path / "p3.st") == sha256_file(target)

    jobs_listed = _ok(cli("admin", "jobs", "--json"))
    assert {jobs[0]["job_id"], other["job_id"]} <= {j["id"] for j in jobs_listed}
    assert benchmark["id"] in {b["id"] for b in _ok(cli("admin", "benchmarks", "--json"))}
    promotions = _ok(cli("admin", "audit", "--action", "version.promoted", "--json"))
    assert {e["target_id"] for e in promotions} >= {version_id, other["version_id"]}
    assert all(e["action"] == "version.promoted" for e in promotions)

    ranked = _ok(cli("admin", "leaderboard", "--metric", "accuracy", "--json"))
    assert version_id in {row["version_id"] for row in ranked}
    values = [row["value"] for row in ranked]
    assert values == sorted(values, reverse=True)
    mine = next(row for row in ranked if row["version_id"] == version_id)
    assert mine["calibration"]["split"] == "val" and mine["calibration"]["layers"] == 2
    assert -1.0 <= mine["mergeability"]["mean_cosine"] <= 1.0
    assert mine["mergeability"]["val_accuracy_recalibrated"] is not None
    board = cli("admin", "leaderboard", env={"COLUMNS": "250"})
    assert board.exit_code == 0, board.stderr
    assert all(c in board.stdout for c in ("cosine", "val_combined", "val_recalibrated"))

    new_base = _ok(cli("admin", "generation", version_id, "--json"))
    assert new_base["id"] != base_record["id"]
    pulled_base = _ok(cli("base", "pull", "--token", hospital.token, "--json"))
    assert pulled_base["base"]["id"] == new_base["id"]
    assert sha256_file(pulled_base["path"]) == new_base["sha256"] == pulled["sha256"]

    # every hospital's vector is now of an older generation: by default the registry applies it
    # to the new base weighted by (1 + s) ** -0.5; --stale exclude leaves nothing to merge
    stale = _ok(
        cli("admin", "merge", "--base", new_base["id"], "--wait", "120", "--json")
    )  # fmt: skip
    assert stale["status"] == "succeeded", stale
    assert stale["selection"]["stale"] == "weight"
    inputs = stale["selection"]["inputs"]
    assert {v["id"] for v in pushed} <= {i["vector_id"] for i in inputs}
    for item in inputs:  # one generation stale: their base is the new base's parent
        assert item["staleness"] == 1
        assert item["weight"] == pytest.approx(item["num_samples"] * 2**-0.5)
    excluded = cli("admin", "merge", "--base", new_base["id"], "--stale", "exclude")
    assert_one_line_error(excluded, 6, "no validated vectors to merge")
