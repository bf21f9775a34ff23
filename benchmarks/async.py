"""Asynchronous merging on a virtual clock: MedVec's policy against the baselines.

For every setting (dataset x N hospitals x IID / Dirichlet(alpha)) and seed, one
``medvec.simulation.asynchronous.run_async`` runs MedVec's registry policy (one or more
variants) and the baselines (synchronous FedAvg, synchronous with a deadline, FedAsync,
FedBuff) from the same pretrained ResNet-10 base (28 px, ImageNet stem; the CPU
profile of ``medvec simulate``), on the same hospital split, clock and compute budget.
The headline setting, BloodMNIST at N = 10 with Dirichlet(0.5), takes
``--headline-seeds``; the others ``--seeds``.

Printed per setting: time to target (the virtual second production's test accuracy
first reached synchronous FedAvg's final accuracy minus 1 point) and the speedup over
synchronous FedAvg, final test and validation accuracy at equal compute, time to the
validation target (what a policy is chosen on), and the hospital checks (straggler's
vectors merged, the late joiner's first vector taken in by the n-th merge after its
push, versions made while a hospital was offline). Each cell's full record (settings,
curves, every version's inputs and staleness, idle time per hospital) is written to
OUT/cells/*.json and its figure to OUT/*.png as it finishes; a rerun of the same
setting reuses every strategy the record already holds (a policy by its rules, under
any name). OUT/summary.json holds every row and the checks.

    python benchmarks/async.py --only-headline --headline-seeds 0 --headline-policy-set candidates
    python benchmarks/async.py --hospitals 10 --seeds 0 --headline-seeds 0 \
        --policy-set generations --headline-policy-set generations --baselines sync \
        --out docs/results/async/generations
    python benchmarks/async.py --hospitals 10  # every N = 10 setting
    python benchmarks/async.py                 # every setting (long on a CPU)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from hospital_cli.async_plot import plot_async
from medvec.data.download import medmnist_num_classes
from medvec.pretrain import PretrainConfig
from medvec.simulation import SweepConfig
from medvec.simulation.asynchronous import (
    BASELINES,
    SUMMARY_COLUMNS,
    AsyncConfig,
    PolicyConfig,
    run_async,
    summarize,
)
from medvec.simulation.sweep import markdown_table, sweep_base

HEADLINE = ("bloodmnist", 10, "dirichlet")
DEFAULT = "medvec"
POLICY_SETS: dict[str, dict[str, PolicyConfig]] = {
    "default": {  # the registry's defaults, and the previous ones
        DEFAULT: PolicyConfig(),
        "medvec_promoted_generations": PolicyConfig(generations="promoted"),
    },
    "headline": {
        DEFAULT: PolicyConfig(),
        # the previous default: a generation starts only from a promoted version
        "medvec_promoted_generations": PolicyConfig(generations="promoted"),
        # the default before it as well: a slow hospital's stale work lost
        "medvec_exclude": PolicyConfig(stale="exclude", generations="promoted"),
    },
    "candidates": {  # the trigger, the staleness exponent and the server step, on validation
        DEFAULT: PolicyConfig(),
        "medvec_k2": PolicyConfig(k=2),
        "medvec_k5": PolicyConfig(k=5),
        "medvec_power_1": PolicyConfig(staleness_power=1.0),
        "medvec_server_lr_0.5": PolicyConfig(server_lr=0.5),
    },
    "generations": {  # what the hospitals train from when the gate refuses, on validation
        DEFAULT: PolicyConfig(),
        "medvec_promoted_generations": PolicyConfig(generations="promoted"),
    },
}
COLUMNS = [c for c in SUMMARY_COLUMNS if c != "end_time"]  # ends differ only by the run


def _list(text: str, kind: type = str) -> list[Any]:
    return [kind(x.strip()) for x in text.split(",") if x.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="bloodmnist,pneumoniamnist")
    parser.add_argument("--hospitals", default="10,50")
    parser.add_argument("--partitions", default="dirichlet,iid")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--headline-seeds", default="0,1,2")
    parser.add_argument("--only-headline", action="store_true")
    parser.add_argument("--policy-set", choices=sorted(POLICY_SETS), default="default")
    parser.add_argument(
        "--headline-policy-set",
        choices=sorted(POLICY_SETS),
        default="headline",
        help="the policies of the headline setting (the other settings: --policy-set)",
    )
    parser.add_argument(
        "--baselines",
        default=",".join(BASELINES),
        help="the baselines run beside the policies (sync gives the target)",
    )
    parser.add_argument("--rounds", type=float, default=None, help="compute budget in rounds")
    parser.add_argument("--local-steps", type=int, default=None)
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--pretrain-steps", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--datasets-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/results/async"))
    parser.add_argument("--cache", type=Path, default=Path("async-output/cache"))
    parser.add_argument(
        "--reuse-from",
        type=Path,
        action="append",
        default=[],
        help="another OUT whose records may hold some of a cell's runs (repeatable)",
    )
    return parser.parse_args()


def _cells(args: argparse.Namespace) -> list[tuple[str, int, str, int]]:
    settings = [
        (dataset, n, partition)
        for dataset in _list(args.datasets)
        for n in _list(args.hospitals, int)
        for partition in _list(args.partitions)
    ]
    if args.only_headline:
        settings = [HEADLINE]
    return [
        (*setting, seed)
        for setting in settings
        for seed in _list(args.headline_seeds if setting == HEADLINE else args.seeds, int)
    ]


def _policy_set(args: argparse.Namespace, cell: tuple[str, int, str, int]) -> str:
    return args.headline_policy_set if cell[:3] == HEADLINE else args.policy_set


def _config(args: argparse.Namespace, cell: tuple[str, int, str, int]) -> AsyncConfig:
    dataset, hospitals, partition, seed = cell
    values: dict[str, Any] = {
        "dataset": dataset,
        "hospitals": hospitals,
        "partition": partition,
        "alpha": args.alpha,
        "seed": seed,
        "policies": POLICY_SETS[_policy_set(args, cell)],
        "baselines": tuple(_list(args.baselines)),
    }
    for field, value in (
        ("compute_rounds", args.rounds),
        ("local_steps", args.local_steps),
        ("max_train", args.max_train),
    ):
        if value is not None:
            values[field] = value
    return AsyncConfig(**values)


def _rounded(value: Any) -> Any:
    """Floats to 6 significant digits: the committed records stay small and readable."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


SHARED = ("policies", "baselines")  # the config's strategies; the rest is the setting
RECORDED_BEFORE = {"generations": "promoted"}
"""Policy fields added after records were written, with the rule those records ran."""


def _policy_key(policy: dict[str, Any]) -> str:
    return json.dumps({**RECORDED_BEFORE, **policy}, sort_keys=True)


def _finished_in(path: Path, config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The runs of the record at ``path`` that ``config`` would make again: the setting
    is the same, and a policy's rules (under any name) or a baseline's parameters too.
    A strategy's run depends on nothing else (``run_async``)."""
    if not path.is_file():
        return {}
    record: dict[str, Any] = json.loads(path.read_text())
    old = record["config"]
    if {k: v for k, v in old.items() if k not in SHARED} != {
        k: v for k, v in config.items() if k not in SHARED
    }:
        return {}
    runs: dict[str, dict[str, Any]] = record["runs"]
    old_policies = {_policy_key(p): n for n, p in old["policies"].items()}
    reused = {
        name: runs[old_policies[key]]
        for name, policy in config["policies"].items()
        if (key := _policy_key(policy)) in old_policies
    }
    reused.update({name: runs[name] for name in config["baselines"] if name in old["baselines"]})
    return reused


def _finished_runs(args: argparse.Namespace, name: str, config: AsyncConfig) -> dict[str, Any]:
    """Runs of this cell found in OUT's record, or else in the records of ``--reuse-from``."""
    wanted = _rounded(config.model_dump(mode="json"))
    found: dict[str, Any] = {}
    for folder in reversed([args.out, *args.reuse_from]):  # OUT's own records win
        found.update(_finished_in(folder / "cells" / name, wanted))
    return found


def _run_cell(
    args: argparse.Namespace, cell: tuple[str, int, str, int], sweep: SweepConfig
) -> dict[str, Any]:
    dataset, hospitals, partition, seed = cell
    name = f"{dataset}-n{hospitals}-{partition}-seed{seed}.json"
    path = args.out / "cells" / name
    config = _config(args, cell)
    finished = _finished_runs(args, name, config)
    if set(finished) == {*config.policies, *config.baselines}:
        print(f"reusing every run of {name}", flush=True)
        return _write(path, _reused_record(args, name, config, finished))
    classes = medmnist_num_classes(dataset, args.datasets_dir)
    base = sweep_base(
        sweep, dataset, "resnet10", classes, args.cache, datasets_dir=args.datasets_dir
    )

    def on_event(name: str, info: dict[str, Any]) -> None:
        if name == "strategy":
            print(
                f"  {dataset} N={hospitals} {partition} seed {seed}: {info['strategy']}", flush=True
            )

    if finished:
        print(f"reusing {sorted(finished)} of {path}", flush=True)
    result = run_async(
        config,
        base,
        datasets_dir=args.datasets_dir,
        device=args.device,
        on_event=on_event,
        finished=finished,
    )
    return _write(path, _rounded(result.to_json()))


def _reused_record(
    args: argparse.Namespace, name: str, config: AsyncConfig, runs: dict[str, Any]
) -> dict[str, Any]:
    """A cell's record made of runs already recorded: what the strategies shared (clocks,
    horizon) from the first record of the cell found, the runs in ``config``'s order."""
    folders = [args.out, *args.reuse_from]
    source = next(path for f in folders if (path := f / "cells" / name).is_file())
    record: dict[str, Any] = json.loads(source.read_text())
    order = [*config.policies, *config.baselines]
    return {
        **record,
        "config": _rounded(config.model_dump(mode="json")),
        "runs": {strategy: runs[strategy] for strategy in order},
    }


def _write(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, separators=(",", ":")))
    return record


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if len(known) == len(values) and known else None


def _setting_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds of every strategy's row (None where a seed never reached the target)."""
    per_seed = [{row["strategy"]: row for row in summarize(r)} for r in records]
    names = list(dict.fromkeys(name for rows_ in per_seed for name in rows_))
    rows = []
    for name in names:
        same = [rows_[name] for rows_ in per_seed if name in rows_]
        row = {"strategy": name, "seeds": len(same)}
        for key in COLUMNS[1:]:
            values = [r[key] for r in same]
            row[key] = (
                _mean(values) if all(isinstance(v, int | float | None) for v in values) else None
            )
        rows.append(row)
    return rows


def _policy_checks(rows: list[dict[str, Any]], policy: str) -> dict[str, Any] | None:
    """The issue's acceptance checks of ``policy`` in one setting."""
    by = {r["strategy"]: r for r in rows}
    mine, sync = by.get(policy), by.get("sync")
    if mine is None or sync is None:
        return None
    beats = []
    for rival in ("fedasync", "fedbuff"):
        other = by.get(rival)
        if other is None:
            continue
        faster = mine["time_to_target"] is not None and (
            other["time_to_target"] is None or mine["time_to_target"] < other["time_to_target"]
        )
        beats.append(faster or mine["final_accuracy"] > other["final_accuracy"])
    return {
        "speedup": mine["speedup"],
        "speedup_at_least_3.8": (mine["speedup"] or 0) >= 3.8,
        "final_minus_sync_points": 100 * (mine["final_accuracy"] - sync["final_accuracy"]),
        "ahead_of_fedasync_and_fedbuff": bool(beats) and all(beats),
        "straggler_merged": mine["straggler_merged"],
        "late_joiner_lag": mine["late_joiner_lag"],
        "versions_while_offline": mine["versions_while_offline"],
    }


def _checks(setting_rows: dict[str, list[dict[str, Any]]], policies: list[str]) -> dict[str, Any]:
    """Per policy variant: its checks in every setting, and in how many settings it is
    ahead of both FedAsync and FedBuff."""
    out: dict[str, Any] = {}
    for policy in policies:
        per_setting = {
            name: checks
            for name, rows in setting_rows.items()
            if (checks := _policy_checks(rows, policy)) is not None
        }
        ahead = sum(c["ahead_of_fedasync_and_fedbuff"] for c in per_setting.values())
        out[policy] = {"settings": per_setting, "settings_ahead_of_both": ahead}
    return out


def main() -> None:
    args = parse_args()
    pretrain = PretrainConfig()
    if args.pretrain_steps is not None:
        pretrain = pretrain.model_copy(update={"steps": args.pretrain_steps})
    sweep = SweepConfig(archs=("resnet10",), stem="imagenet", pretrain=pretrain)
    started = time.perf_counter()
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for cell in _cells(args):
        record = _run_cell(args, cell, sweep)
        name = f"{cell[0]} N={cell[1]} {cell[2]}"
        by_setting.setdefault(name, []).append(record)
        rows = summarize(record)
        print(f"\n{name} seed {cell[3]} (target {rows[0]['target']:.3f})")
        print(markdown_table(rows, COLUMNS), flush=True)
        stem = f"{cell[0]}-n{cell[1]}-{cell[2]}-seed{cell[3]}"
        plot_async(record, args.out / f"{stem}.png", rows[0]["target"])
    setting_rows = {name: _setting_rows(records) for name, records in by_setting.items()}
    for name, rows in setting_rows.items():
        print(f"\n{name}: mean over {rows[0]['seeds']} seed(s)")
        print(markdown_table(rows, COLUMNS))
    policies = {*POLICY_SETS[args.policy_set], *POLICY_SETS[args.headline_policy_set]}
    checks = _checks(setting_rows, sorted(policies))
    print("\nchecks:", json.dumps(checks, indent=1))
    seconds = round(time.perf_counter() - started)
    summary = {"settings": setting_rows, "checks": checks, "seconds": seconds}
    (args.out / "summary.json").write_text(json.dumps(_rounded(summary), indent=1))


if __name__ == "__main__":
    main()
