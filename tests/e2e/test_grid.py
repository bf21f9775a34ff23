"""The resumable reproduction grid on real PneumoniaMNIST, at tiny sizes."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from medvec.errors import MedVecError
from medvec.pretrain import PretrainConfig
from medvec.simulation import SimulationConfig, SweepConfig
from medvec.simulation.grid import (
    CELLS_DIR,
    GridConfig,
    aggregate,
    finished_records,
    run_grid,
    side_by_side,
)
from tests.e2e.tiny import ensure_registered


class Interrupted(Exception):
    """Stands for a kill between two cells."""


def _config(arch: str, seeds: tuple[int, ...], generations: int = 2) -> GridConfig:
    point = SimulationConfig(
        max_train=120, max_val=64, max_test=100, generations=generations, steps=2,
        batch_size=16, lr=0.01, strategies=("weighted_mean",),
    )  # fmt: skip
    sweep = SweepConfig(
        datasets=("pneumoniamnist", "octmnist"),
        hospitals=(2,),
        archs=(arch,),
        point=point,
        pretrain=PretrainConfig(max_samples=64, steps=2, batch_size=16),
    )
    return GridConfig(sweep=sweep, seeds=seeds, report_generations=(1, 2))


def _run(config: GridConfig, out: Path, datasets_dir: Path, stop_at: str | None = None) -> Any:
    events: list[tuple[str, dict[str, Any]]] = []

    def on_event(name: str, info: dict[str, Any]) -> None:
        events.append((name, info))
        if name == "cell" and info["cell"] == stop_at:
            raise Interrupted

    outcome = run_grid(
        config, out, out / "cache", datasets_dir=datasets_dir, device="cpu", on_event=on_event
    )
    return outcome, events


@pytest.mark.slow
def test_an_interrupted_grid_resumes_without_recomputing_finished_cells(
    tmp_path: Path, datasets_dir: Path
) -> None:
    arch = ensure_registered()
    config = _config(arch, seeds=(0, 1))
    out = tmp_path / "grid"
    seed0 = f"pneumoniamnist-{arch}-n2-seed0.json"
    seed1 = f"pneumoniamnist-{arch}-n2-seed1.json"
    with pytest.raises(Interrupted):
        _run(config, out, datasets_dir, stop_at=seed1)
    cells = out / CELLS_DIR
    assert sorted(p.name for p in cells.iterdir()) == [seed0]  # no partial file of seed 1
    first = (cells / seed0).read_bytes()
    mtime = (cells / seed0).stat().st_mtime_ns

    outcome, events = _run(config, out, datasets_dir)
    assert [c.filename for c in outcome.reused] == [seed0]
    assert [c.filename for c in outcome.computed] == [seed1]
    assert (cells / seed0).read_bytes() == first and (cells / seed0).stat().st_mtime_ns == mtime
    started = [info["cell"] for name, info in events if name == "cell"]
    assert started == [seed1]
    assert [info["dataset"] for name, info in events if name == "skipped"] == ["octmnist"]

    records = [json.loads((cells / name).read_text()) for name in (seed0, seed1)]
    assert records[0]["local_mean"] != records[1]["local_mean"]  # the seed changes the run
    for record in records:
        assert [s["generation"] for s in record["weighted_mean"]] == [1, 2]
        (local_rows,) = [[r for r in record["rows"] if r["kind"] == "local"]]
        assert record["local_mean"] == pytest.approx(
            statistics.fmean(r["accuracy"] for r in local_rows)
        )

    # what --table-only tabulates
    assert [r["cell"] for r in finished_records(out)] == [r["cell"] for r in outcome.records]
    (row,) = aggregate(outcome.records, (1, 2))
    assert (row["dataset"], row["hospitals"], row["seeds"]) == ("pneumoniamnist", 2, [0, 1])
    locals_ = [r["local_mean"] for r in records]
    assert row["local_mean"]["mean"] == pytest.approx(statistics.fmean(locals_))
    assert row["local_mean"]["std"] == pytest.approx(statistics.stdev(locals_))
    gen2 = [r["weighted_mean"][1]["accuracy"] for r in records]
    assert row["merged_gen2"]["mean"] == pytest.approx(statistics.fmean(gen2))
    assert row["centralized"]["n"] == 2
    assert (row["seed000_local"], row["seed000_federated"]) == (None, None)  # no N = 2 cell
    table = side_by_side([row], (1, 2))
    mean, std = row["local_mean"]["mean"], row["local_mean"]["std"]
    assert f"{mean:.3f} ± {std:.3f}" in table
    assert "merged gen 2" in table.splitlines()[0]


@pytest.mark.slow
def test_a_rerun_with_other_settings_is_refused(tmp_path: Path, datasets_dir: Path) -> None:
    arch = ensure_registered()
    out = tmp_path / "grid"
    _run(_config(arch, seeds=(0,), generations=1), out, datasets_dir)
    before = sorted(p.name for p in (out / CELLS_DIR).iterdir())
    with pytest.raises(MedVecError, match="other settings"):
        _run(_config(arch, seeds=(0,), generations=2), out, datasets_dir)
    assert sorted(p.name for p in (out / CELLS_DIR).iterdir()) == before


def test_side_by_side_labels_our_own_rows_and_quotes_table_3() -> None:
    def stats(value: float) -> dict[str, Any]:
        return {"mean": value, "std": 0.01, "n": 3}

    rows = [
        {
            "dataset": name, "arch": "resnet18", "hospitals": 5, "seeds": [0, 1, 2],
            "local_mean": stats(0.8), "merged_gen1": stats(0.81), "centralized": stats(0.9),
            "seed000_local": local, "seed000_federated": fed,
        }
        for name, local, fed in (("bloodmnist", None, None), ("pneumoniamnist", 0.8621, 0.8834))
    ]  # fmt: skip
    lines = side_by_side(rows, (1,)).splitlines()
    assert lines[2].startswith("| pneumoniamnist | 5 |") and "0.862 → 0.883" in lines[2]
    assert lines[3].startswith("| bloodmnist |") and "ours only (not in seed 000)" in lines[3]
    assert "0.800 ± 0.010" in lines[3]
