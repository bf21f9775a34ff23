"""medvec train --continue-from: a second job on the same base keeps the first job's work.

Real PneumoniaMNIST, the tiny CPU model of ``tests/cli/tiny.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from medvec.hashing import sha256_file
from medvec.models import ModelSpec, load_model_file, read_model_provenance, save_model_file
from medvec.vectors import load_vector, read_vector_metadata
from medvec.vectors.names import is_running_stat
from tests.cli.conftest import CliResult, Hospital, Registry, assert_one_line_error, login
from tests.cli.tiny import TINY, make_base

pytestmark = pytest.mark.slow

Cli = Callable[..., CliResult]
JOB = [
    "--max-samples", "600", "--lr", "0.01", "--batch-size", "64", "--device", "cpu", "--json",
]  # fmt: skip


@pytest.fixture(scope="module")
def pneumonia(datasets_dir: Path) -> Path:
    return datasets_dir / "pneumoniamnist.npz"


def _train(cli: Cli, data: Path, out: Path, *extra: Any) -> dict[str, Any]:
    result = cli("train", "--data", data, "-o", out, *JOB, *extra)
    assert result.exit_code == 0, result.stderr
    return dict(result.json()["metadata"])


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(((a[k] - b[k]).double() ** 2).sum()) for k in a))


def _norm(tensors: dict[str, torch.Tensor]) -> float:
    return _distance(tensors, {k: torch.zeros_like(v) for k, v in tensors.items()})


def test_continued_vector_is_the_continued_model_minus_the_base_and_pushes(
    cli: Cli,
    registry: Registry,
    hospital: Hospital,
    base_record: dict[str, Any],
    pneumonia: Path,
    tmp_path: Path,
) -> None:
    login(cli, registry, hospital.token)
    assert cli("base", "pull", "--id", str(base_record["id"])).exit_code == 0
    first, second, fresh = (tmp_path / f"{n}.safetensors" for n in ("v1", "v2", "fresh"))
    tuned1, tuned2, tuned_fresh = (tmp_path / f"{n}.safetensors" for n in ("m1", "m2", "mf"))

    meta1 = _train(cli, pneumonia, first, "--steps", "12", "--save-model", tuned1)
    assert "continued_from" not in meta1["training"]
    provenance1 = read_model_provenance(tuned1)
    assert provenance1 == {
        "finetuned_from": base_record["sha256"], "vector": first.name, "cumulative_steps": 12,
    }  # fmt: skip
    pushed = cli("push", first, "--json")
    assert pushed.exit_code == 0, pushed.stderr

    # production has not moved: the second job starts where the first one ended
    job2 = ["--steps", "8", "--seed", "1"]
    meta2 = _train(cli, pneumonia, second, *job2, "--continue-from", tuned1, "--save-model", tuned2)
    assert meta2["base_sha256"] == base_record["sha256"]
    assert meta2["training"]["continued_from"] == sha256_file(tuned1)
    assert meta2["training"]["cumulative_steps"] == 12 + 8
    assert read_model_provenance(tuned2) == {
        "finetuned_from": base_record["sha256"], "vector": second.name,
        "continued_from": sha256_file(tuned1), "cumulative_steps": 20,
    }  # fmt: skip

    # the vector is still against the base: exactly the continued model minus the base
    base_state = load_model_file(base_record["path"])[0].state_dict()
    tuned_state = load_model_file(tuned2)[0].state_dict()
    vector2 = load_vector(second)[0]
    assert set(vector2) == {k for k, v in base_state.items() if v.is_floating_point()}
    for key, delta in vector2.items():
        torch.testing.assert_close(base_state[key] + delta, tuned_state[key])

    # the same second job from the base is another vector: the first job's work is in ours
    _train(cli, pneumonia, fresh, *job2, "--save-model", tuned_fresh)
    vector_fresh, vector1 = load_vector(fresh)[0], load_vector(first)[0]
    assert _distance(vector2, vector_fresh) > 0.25 * _norm(vector_fresh)
    # its learned weights are the first job's plus a step on (BatchNorm's running
    # statistics, moving averages, forget where they started and are left out)
    weights = [k for k in vector1 if not is_running_stat(k)]
    ours, theirs = ({k: v[k] for k in weights} for v in (vector2, vector_fresh))
    first_weights = {k: vector1[k] for k in weights}
    assert _distance(ours, first_weights) < 0.6 * _distance(theirs, first_weights)

    # the registry takes it and it replaces the first job's vector
    pushed2 = cli("push", second, "--json")
    assert pushed2.exit_code == 0, pushed2.stderr
    assert pushed2.json()["vector"]["status"] != "rejected"
    vectors = {v["sha256"]: v for v in cli("status", "--json").json()["vectors"]}
    assert vectors[sha256_file(first)]["status"] == "superseded"
    assert vectors[sha256_file(second)]["status"] != "superseded"


def test_a_model_of_another_base_or_architecture_is_refused(
    cli: Cli, tiny_base: Path, pneumonia: Path, tmp_path: Path
) -> None:
    refused_out = tmp_path / "refused.safetensors"

    def offline(*args: Any, base: Path = tiny_base, out: Path = refused_out) -> CliResult:
        return cli(
            "train", "--data", pneumonia, "-o", out, *JOB, "--steps", "3",
            "--base", base, "--hospital", "offline-hospital", *args,
        )  # fmt: skip

    other_base = make_base(tmp_path / "other-base.safetensors", seed=1)
    tuned_other = tmp_path / "tuned-other.safetensors"
    trained = offline("--save-model", tuned_other, base=other_base, out=tmp_path / "o.safetensors")
    assert trained.exit_code == 0, trained.stderr
    assert read_model_provenance(tuned_other)["finetuned_from"] == sha256_file(other_base)
    # same architecture, same shapes, another base: the vector would be silently wrong
    refused = offline("--continue-from", tuned_other)
    assert_one_line_error(
        refused, 1, "--continue-from", "fine-tuned from base", sha256_file(tiny_base)[:12]
    )

    # a model that claims this base but is of another architecture (3 classes, not 2)
    base_sha = sha256_file(tiny_base)
    wide = tmp_path / "three-classes.safetensors"
    spec3 = ModelSpec(arch=TINY, num_classes=3, in_channels=3, image_size=28)
    make_base(wide, num_classes=3)
    model3 = load_model_file(wide)[0]
    save_model_file(wide, model3, spec3, provenance={"finetuned_from": base_sha})
    assert_one_line_error(offline("--continue-from", wide), 1, "3 classes", "2 classes")

    # the right spec and base, tensors of another dtype
    base_model, spec = load_model_file(tiny_base)
    halved = tmp_path / "half.safetensors"
    state = {
        k: v.half() if v.is_floating_point() else v for k, v in base_model.state_dict().items()
    }
    save_model_file(halved, state, spec, provenance={"finetuned_from": base_sha})
    assert_one_line_error(offline("--continue-from", halved), 1, "torch.float16", "float32")

    # a file `medvec train --save-model` did not write: the base itself, a vector, nothing
    assert_one_line_error(offline("--continue-from", tiny_base), 1, "records no base")
    vector = tmp_path / "v.safetensors"
    assert offline(out=vector).exit_code == 0
    assert_one_line_error(offline("--continue-from", vector), 1, "not a MedVec model file")
    missing = tmp_path / "nowhere.safetensors"
    assert_one_line_error(offline("--continue-from", missing), 1, "does not exist")
    assert not refused_out.exists()


def test_continuing_with_privacy_noise_is_refused(
    cli: Cli, tiny_base: Path, pneumonia: Path, tmp_path: Path
) -> None:
    """The continued vector holds the earlier job's training, which this run's epsilon
    would not count: refused before any work. Clipping alone claims no epsilon."""
    tuned, out = tmp_path / "tuned.safetensors", tmp_path / "out.safetensors"
    common = [*JOB, "--base", tiny_base, "--hospital", "offline-hospital"]
    first = cli("train", "--data", pneumonia, "-o", tmp_path / "v1.safetensors", *common,
                "--steps", "3", "--save-model", tuned)  # fmt: skip
    assert first.exit_code == 0, first.stderr
    again = ["train", "--data", pneumonia, "-o", out, *common, "--continue-from", tuned]
    noise = cli(*again, "--steps", "3", "--dp-clip", "1.0", "--dp-noise", "0.5")
    assert_one_line_error(noise, 1, "--continue-from", "--dp-noise", "epsilon")
    dp_sgd = cli(*again, "--epochs", "1", "--dp-sgd", "--dp-clip", "1.0", "--dp-noise", "1.1")
    assert_one_line_error(dp_sgd, 1, "--continue-from", "--dp-sgd")
    assert not out.exists()

    # the model file it starts from may be the one it writes (the docs' example)
    started_from = sha256_file(tuned)
    clipped = cli(*again, "--steps", "3", "--dp-clip", "0.01", "--save-model", tuned)
    assert clipped.exit_code == 0, clipped.stderr
    meta = read_vector_metadata(out)
    assert meta.privacy == {"dp_sgd": False, "dp_clip": 0.01}
    assert meta.training["continued_from"] == started_from != sha256_file(tuned)
    assert meta.training["cumulative_steps"] == 6
    assert read_model_provenance(tuned)["continued_from"] == started_from
    assert _norm(load_vector(out)[0]) == pytest.approx(0.01, rel=1e-4)
