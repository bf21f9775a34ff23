"""The demo's asynchronous schedule against its lockstep schedule, measured in one run.

Runs the demo twice on this machine, one after the other, with the same data, base,
seed, hospitals and paces (one straggler, one late joiner): first the asynchronous
default, then ``--lockstep``. Both leave out the reference models (hospitals alone,
pooled training), which would otherwise share the CPU with one schedule for longer than
with the other. Printed: the promoted model's test accuracy and the schedule's wall time
(from the hospitals' start to the last promoted model) of each, the difference and the
ratio, and when the asynchronous run's production first reached the lockstep run's
final accuracy. Written: OUT/async_vs_lockstep.json (settings, machine, both runs'
summaries, production curves, versions and hospital checks) and
OUT/async_vs_lockstep.png (both production curves against wall time).

    python benchmarks/demo_async.py --quick
    python benchmarks/demo_async.py              # the demo's defaults (long on a CPU)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hospital_cli.commands.demo import DEFAULTS, QUICK
from hospital_cli.demo.plot import plot_report
from hospital_cli.demo.report import hospital_checks, production_curve, summary
from hospital_cli.demo.run import pretrained_base, run_demo
from hospital_cli.demo.state import DemoReport, DemoSettings, Ui


class Phases(Ui):
    """Prints the demo's phases, each once, with the time."""

    def __init__(self, label: str) -> None:
        self.label, self.last = label, ""

    def phase(self, text: str) -> None:
        if text != self.last and not text.startswith(("hospitals at", "evaluating", "merging:")):
            print(f"{time.strftime('%H:%M:%S')} [{self.label}] {text}", flush=True)
        self.last = text


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="medvec demo --quick's settings")
    parser.add_argument("--hospitals", type=int, default=None)
    parser.add_argument("--generations", type=int, default=None)
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--datasets-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("docs/results/demo"))
    parser.add_argument(
        "--work", type=Path, default=None, help="the runs' registries and files (a temp dir)"
    )
    return parser.parse_args()


def _settings(args: argparse.Namespace, output: Path, *, lockstep: bool) -> DemoSettings:
    values = dict(QUICK if args.quick else DEFAULTS)
    for field in ("hospitals", "generations", "max_train"):
        if getattr(args, field) is not None:
            values[field] = getattr(args, field)
    strategies = tuple(str(values.pop("strategies")).split(","))
    return DemoSettings(
        output=output,
        strategies=strategies,
        lockstep=lockstep,
        references=False,
        seed=args.seed,
        datasets_dir=args.datasets_dir,
        device=args.device,
        **values,
    )


def _run(args: argparse.Namespace, work: Path, *, lockstep: bool) -> tuple[DemoReport, float]:
    name = "lockstep" if lockstep else "asynchronous"
    settings = _settings(args, work / name, lockstep=lockstep)
    cpu = time.process_time()
    report = run_demo(settings, Phases(name), pretrained_base(settings))
    return report, time.process_time() - cpu


def _record(report: DemoReport, cpu_s: float) -> dict[str, Any]:
    return {
        "summary": summary(report),
        "schedule_s": report.schedule_s,
        "cpu_s_demo_process": round(cpu_s, 1),
        "budget_images": report.budget_images,
        "images_trained": report.images_trained,
        "registry": report.registry,
        "production": [
            {"t": t, "accuracy": a, "version_id": v} for t, a, v in production_curve(report)
        ],
        "versions": [
            {
                "version_id": v.version_id,
                "generation": v.generation,
                "trigger": v.trigger,
                "created_s": v.created_s,
                "vectors": v.vectors,
                "test_accuracy": v.metrics.get("accuracy"),
                "val_accuracy": v.val_metrics.get("accuracy"),
            }
            for v in report.versions
        ],
        "jobs": [
            {
                "hospital": r.hospital,
                "job": r.job,
                "generation": r.generation,
                "started_s": r.started_s,
                "pushed_s": r.pushed_s,
                "trained_s": r.trained_s,
                "continued": r.continued,
                "status": r.vector_status,
            }
            for r in report.locals
        ],
        "checks": hospital_checks(report),
    }


def _reached(report: DemoReport, accuracy: float) -> float | None:
    """When production's test accuracy first reached ``accuracy`` (seconds), if ever."""
    return next((t for t, a, _ in production_curve(report) if a >= accuracy), None)


def _noise(a: float, b: float, n: int) -> float:
    """Standard error of the difference of two accuracies on ``n`` test images, taken as
    independent samples (binomial): the sampling noise of the comparison alone, not
    the training noise between runs."""
    return math.sqrt((a * (1 - a) + b * (1 - b)) / n)


def _test_images(settings: DemoSettings) -> int:
    benchmark = settings.output / "data" / f"{settings.dataset}-benchmark.npz"
    with np.load(benchmark) as archive:
        return len(archive["test_labels"])


def main() -> None:
    args = parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="medvec-demo-async-"))
    load_before = os.getloadavg()
    asynchronous, async_cpu = _run(args, work, lockstep=False)
    lockstep, lockstep_cpu = _run(args, work, lockstep=True)
    load_after = os.getloadavg()
    a = summary(asynchronous)["promoted_accuracy"]
    b = summary(lockstep)["promoted_accuracy"]
    if not isinstance(a, float) or not isinstance(b, float):
        raise SystemExit("a run promoted no model")
    n_test = _test_images(asynchronous.settings)
    comparison = {
        "accuracy_async": a,
        "accuracy_lockstep": b,
        "accuracy_difference_points": round(100 * (a - b), 2),
        "difference_standard_error_points": round(100 * _noise(a, b, n_test), 2),
        "test_images": n_test,
        "schedule_s_async": asynchronous.schedule_s,
        "schedule_s_lockstep": lockstep.schedule_s,
        "wall_time_ratio_lockstep_over_async": round(
            lockstep.schedule_s / asynchronous.schedule_s, 2
        ),
        "async_reached_lockstep_final_accuracy_s": _reached(asynchronous, b),
        "best_production_accuracy_async": max(a for _, a, _ in production_curve(asynchronous)),
        "best_production_accuracy_lockstep": max(a for _, a, _ in production_curve(lockstep)),
        "images_ratio_async_over_lockstep": round(
            asynchronous.images_trained / lockstep.images_trained, 3
        ),
    }
    settings = {
        k: v for k, v in vars(_settings(args, Path("."), lockstep=False)).items() if k != "output"
    }
    record = {
        "what": "medvec demo's asynchronous default against --lockstep, one after the other",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()},
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
        },
        "comparison": comparison,
        "asynchronous": _record(asynchronous, async_cpu),
        "lockstep": _record(lockstep, lockstep_cpu),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "async_vs_lockstep.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    plot = plot_report(asynchronous, args.out / "async_vs_lockstep.png", compare=lockstep)
    print(json.dumps(comparison, indent=2))
    print(
        f"asynchronous: test accuracy {a:.3f} in {asynchronous.schedule_s:.0f} s; lockstep: "
        f"{b:.3f} in {lockstep.schedule_s:.0f} s; {comparison['accuracy_difference_points']:+.1f}"
        f" points (standard error {comparison['difference_standard_error_points']:.1f}), "
        f"lockstep took {comparison['wall_time_ratio_lockstep_over_async']:.2f}x as long"
    )
    print(f"wrote {path} and {plot}; the runs' files are in {work}")


if __name__ == "__main__":
    main()
