"""Seed 000's Table 3 beside ours: local vs merged vs centralized, N hospitals, 3 seeds.

For every dataset, architecture, number of hospitals N and seed (one *cell*), one
in-process simulation (``medvec.simulation``) splits the training set IID across N
hospitals and runs G generations (rounds) from a shared pretrained base: in each,
every hospital fine-tunes the current global model and the weighted mean of their
data vectors (FedAvg's aggregation, BatchNorm statistics recomputed on validation
images) becomes the next global model. Each hospital's own model (trained with the
same total budget) and one centralized model on the union are the references.
Everything is reported on the test split.

Settings follow seed 000's Table 2: G = 20 rounds, S = 10 local updates a round
(read as 10 optimizer steps; ``--local-epochs`` reads it as epochs), batch 16, lr
0.01. ``--gpu``: every training and validation image, ResNet-18 with the MedMNIST
stride-1 stem, a base pretrained for 20,000 steps, on CUDA. The CPU profile keeps
every training image (a step budget costs the same whatever the data size) but
uses torchvision's ImageNet stem (about 7x faster at 28 px), 500 validation images
and a base pretrained for 500 steps.

Each cell's result is written to OUT/cells/*.json as soon as it finishes; running
the same command again skips finished cells (a rerun resumes an interrupted grid).
The table (OUT/table.md, table.csv, table.json) shows mean ± std over the seeds;
``--table-only`` writes it from the cells finished so far without running any.

    python benchmarks/reproduce.py --datasets pneumoniamnist --hospitals 5,10
    python benchmarks/reproduce.py --gpu --hospitals 5,10,20,50
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from medvec.pretrain import PretrainConfig
from medvec.simulation import SimulationConfig, SweepConfig
from medvec.simulation.grid import (
    GridConfig,
    GridOutcome,
    aggregate,
    finished_records,
    run_grid,
    side_by_side,
)
from medvec.simulation.seed000 import SEED000_SETTINGS

DATASETS = ("pneumoniamnist", "organsmnist", "octmnist", "bloodmnist", "organamnist")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _strs(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help="missing ones are listed")
    parser.add_argument("--hospitals", default="5,10,20,50")
    parser.add_argument("--archs", default="resnet18")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--generations", type=int, default=SEED000_SETTINGS["rounds"])
    parser.add_argument(
        "--local-steps", type=int, default=SEED000_SETTINGS["local_updates"], help="per round"
    )
    parser.add_argument("--local-epochs", type=int, default=None, help="per round, not steps")
    parser.add_argument("--lr", type=float, default=SEED000_SETTINGS["lr"])
    parser.add_argument("--batch-size", type=int, default=SEED000_SETTINGS["batch_size"])
    parser.add_argument("--max-train", type=int, default=None, help="default: every image")
    parser.add_argument("--max-val", type=int, default=500, help="calibration images")
    parser.add_argument("--max-test", type=int, default=None)
    parser.add_argument("--stem", default="imagenet", help="imagenet (CPU), small (MedMNIST)")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--pretrain-steps", type=int, default=500)
    parser.add_argument("--pretrain-samples", type=int, default=None, help="cap per set")
    parser.add_argument("--report", default="1,3,20", help="generations shown in the table")
    parser.add_argument("--gpu", action="store_true", help="seed settings at full size, cuda")
    parser.add_argument("--device", default=None)
    parser.add_argument("--datasets-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("reproduce-output"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="bases; default OUT/cache")
    parser.add_argument(
        "--table-only", action="store_true", help="tabulate the cells finished in OUT, run none"
    )
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> GridConfig:
    if args.gpu:
        args.stem, args.max_val = "small", None
        args.pretrain_steps = max(args.pretrain_steps, 20000)
        args.device = args.device or "cuda"
    point = SimulationConfig(
        max_train=args.max_train,
        max_val=args.max_val,
        max_test=args.max_test,
        generations=args.generations,
        epochs=args.local_epochs or 1,
        steps=None if args.local_epochs else args.local_steps,
        lr=args.lr,
        batch_size=args.batch_size,
        strategies=("weighted_mean",),
    )
    sweep = SweepConfig(
        datasets=_strs(args.datasets),
        hospitals=_ints(args.hospitals),
        archs=_strs(args.archs),
        point=point,
        pretrain=PretrainConfig(max_samples=args.pretrain_samples, steps=args.pretrain_steps),
        image_size=args.image_size,
        stem=args.stem,
    )
    return GridConfig(sweep=sweep, seeds=_ints(args.seeds), report_generations=_ints(args.report))


def flat_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Aggregated rows with ``*_mean``, ``*_std``, ``*_n`` columns, for CSV."""
    flat = []
    for row in rows:
        out: dict[str, Any] = {}
        for key, value in row.items():
            if isinstance(value, dict):
                out.update({f"{key}_{k}": v for k, v in value.items()})
            elif isinstance(value, list):
                out[key] = " ".join(map(str, value))
            else:
                out[key] = value
        flat.append(out)
    return flat


def _csv_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    handle = io.StringIO()
    writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return handle.getvalue()


def hardware_line(device: str | None) -> str:
    if (device or "").startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {torch.get_num_threads()} torch threads; torch {torch.__version__}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = build_config(args)
    hardware = hardware_line(args.device)
    print(f"hardware: {hardware}", flush=True)
    print(f"settings: {config.model_dump_json()}", flush=True)
    started = time.perf_counter()

    def on_event(name: str, info: dict[str, Any]) -> None:
        if name in ("skipped", "reused", "cell", "done", "merge", "centralized"):
            print(f"[{time.perf_counter() - started:7.1f}s] {name}: {info}", flush=True)

    if args.table_only:
        outcome = GridOutcome(records=finished_records(args.out))
    else:
        outcome = run_grid(
            config,
            args.out,
            args.cache_dir or args.out / "cache",
            datasets_dir=args.datasets_dir,
            device=args.device,
            on_event=on_event,
        )
    elapsed = time.perf_counter() - started
    generations = tuple(g for g in config.report_generations if g <= args.generations)
    rows = aggregate(outcome.records, generations)
    table = side_by_side(rows, generations)
    notes = [f"- not run: {reason}" for reason in outcome.skipped]
    if args.table_only:
        notes.append(f"- tabulated the {len(outcome.records)} cells finished in {args.out}")
    else:
        computed, reused = len(outcome.computed), len(outcome.reused)
        notes.append(f"- cells computed now: {computed}, read back: {reused}")
        notes.append(f"- hardware: {hardware}; wall time {elapsed:.0f} s")
    text = f"{table}\n\n" + "\n".join(notes) + "\n"
    (args.out / "table.md").write_text(text)
    (args.out / "table.csv").write_text(_csv_text(flat_rows(rows)))
    payload = {"config": config.model_dump(), "rows": rows, "skipped": outcome.skipped}
    (args.out / "table.json").write_text(json.dumps(payload, indent=1))
    print(f"\n{text}")


if __name__ == "__main__":
    main()
