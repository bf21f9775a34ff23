"""Does merging pay? The learning targets, measured against baselines of the same run.

For every dataset and number of hospitals N, one simulation (``medvec.simulation``)
trains the hospitals' own models, G generations of merges and a pooled
(centralized) model from the same base on the same images, and this script prints
the margins the project is judged by:

* ``wm - local``: the weighted-mean merge (BatchNorm recalibrated) of the last
  generation against the mean local model, in accuracy points and macro AUC,
  beside seed 000's local-to-federated margin at that N;
* ``central - wm``: how far the merge stays from pooled training;
* ``wm - best``: the merge against the best single hospital (non-IID runs).

Every choice inside a run (task-arithmetic lambda, promotion) is made on the
validation split; the figures are test-split accuracy. With ``--seeds 0,1,2`` each
cell is mean ± std over seeds.

    python benchmarks/learning.py                       # CPU defaults, N = 5, every set
    python benchmarks/learning.py --datasets bloodmnist --hospitals 5,10,20,50 --gpu
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from medvec.data import resolve_datasets_dir
from medvec.pretrain import PretrainConfig
from medvec.simulation import SimulationConfig, SweepConfig, run_sweep
from medvec.simulation.seed000 import seed000_margin


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _strs(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=None, help="default: every .npz in the folder")
    parser.add_argument("--hospitals", default="5")
    parser.add_argument("--alpha", type=float, default=None, help="Dirichlet non-IID split")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--generations", type=int, default=None)
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--max-test", type=int, default=None)
    parser.add_argument("--stem", default="imagenet")
    parser.add_argument(
        "--arch", default="resnet18", help="the issue's IID targets are ResNet-18's"
    )
    parser.add_argument("--pretrain-steps", type=int, default=None)
    parser.add_argument("--gpu", action="store_true", help="full training sets, MedMNIST stem")
    parser.add_argument("--device", default=None)
    parser.add_argument("--datasets-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("learning-output"))
    return parser.parse_args()


def _point(args: argparse.Namespace, seed: int) -> SimulationConfig:
    defaults = SimulationConfig()
    values: dict[str, Any] = {
        "partition": "iid" if args.alpha is None else "dirichlet",
        "alpha": args.alpha or defaults.alpha,
        "seed": seed,
        "max_test": args.max_test,
    }
    if args.gpu:
        values.update(max_train=None, batch_size=64)
    if args.max_train is not None:
        values["max_train"] = args.max_train
    if args.generations is not None:
        values["generations"] = args.generations
    return SimulationConfig(**values)


def _mean_std(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _margins(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    keys = ("local_mean", "local_best", "wm_gen1", "weighted_mean", "promoted", "centralized")
    cells: dict[str, list[float]] = {k: [float(r[k]) for r in rows] for k in keys}
    cells["wm_minus_local"] = [100 * (r["weighted_mean"] - r["local_mean"]) for r in rows]
    cells["auc_gain"] = [r["wm_auc"] - r["local_auc"] for r in rows]
    cells["central_minus_wm"] = [100 * (r["centralized"] - r["weighted_mean"]) for r in rows]
    cells["wm_minus_best"] = [100 * (r["weighted_mean"] - r["local_best"]) for r in rows]
    cells["seconds"] = [float(r["seconds"]) for r in rows]
    return cells


def main() -> None:
    args = parse_args()
    device = args.device or ("cuda" if args.gpu else None)
    folder = resolve_datasets_dir(args.datasets_dir)
    datasets = (
        _strs(args.datasets) if args.datasets else sorted(p.stem for p in folder.glob("*.npz"))
    )
    hardware = (
        torch.cuda.get_device_name(0)
        if (device or "").startswith("cuda")
        else f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    )
    pretrain = PretrainConfig()
    if args.pretrain_steps is not None:
        pretrain = pretrain.model_copy(update={"steps": args.pretrain_steps})
    stem = "small" if args.gpu else args.stem
    print(f"hardware: {hardware}; torch {torch.__version__}; datasets {datasets}", flush=True)
    started = time.perf_counter()
    by_cell: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for seed in _ints(args.seeds):
        config = SweepConfig(
            datasets=tuple(datasets),
            hospitals=tuple(_ints(args.hospitals)),
            archs=(args.arch,),
            point=_point(args, seed),
            pretrain=pretrain,
            stem=stem,
        )
        outcome = run_sweep(
            config, args.out / f"seed{seed}", args.out / "cache", datasets_dir=folder, device=device
        )
        for row in outcome.rows:
            by_cell.setdefault((row["dataset"], row["hospitals"]), []).append(row)
        for reason in outcome.skipped:
            print(f"not run: {reason}")
    header = (
        "| dataset | N | local mean | best local | WM gen 1 | WM last gen | promoted | centralized "
        "| WM - local (pts) | seed 000 margin | AUC gain | central - WM (pts) | WM - best (pts) "
        "| seconds |"
    )
    lines = [header, "|" + " --- |" * 14]
    summary = []
    for (dataset, n), rows in sorted(by_cell.items()):
        cells = _margins(rows)
        seed_margin = seed000_margin("pneumoniamnist", n)  # the margin the targets quote
        lines.append(
            f"| {dataset} | {n} | "
            + " | ".join(
                _mean_std(cells[k])
                for k in ("local_mean", "local_best", "wm_gen1", "weighted_mean", "promoted")
            )
            + f" | {_mean_std(cells['centralized'])} | {_mean_std(cells['wm_minus_local'], 1)} | "
            + (f"+{seed_margin:.1f}" if seed_margin is not None else "")
            + f" | {_mean_std(cells['auc_gain'])} | {_mean_std(cells['central_minus_wm'], 1)} | "
            + f"{_mean_std(cells['wm_minus_best'], 1)} | {statistics.mean(cells['seconds']):.0f} |"
        )
        summary.append({"dataset": dataset, "hospitals": n, "runs": rows})
    text = "\n".join(lines)
    elapsed = time.perf_counter() - started
    print(f"\n{text}\n\nhardware: {hardware}; wall time {elapsed:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learning.md").write_text(f"{text}\n\nhardware: {hardware}; {elapsed:.0f} s\n")
    (args.out / "learning.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
