"""``medvec simulate --async``: MedVec's policy and the baselines on a virtual clock.

Runs ``medvec.simulation.asynchronous.run_async`` from the cached base that ``medvec
simulate`` uses, writes every run's settings and series to ``OUTPUT/async.json`` and
the accuracy-over-time curves to ``OUTPUT/async.png``, and prints the summary table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hospital_cli import output
from hospital_cli.async_plot import plot_async

__all__ = ["ASYNC_COLUMNS", "run_clocked"]

ASYNC_COLUMNS = [
    "strategy",
    "time_to_target",
    "speedup",
    "final_accuracy",
    "final_val_accuracy",
    "compute",
    "versions",
    "promoted",
    "straggler_merged",
    "late_joiner_lag",
    "versions_while_offline",
    "idle_share",
]


def run_clocked(
    settings: dict[str, Any],
    sweep: Any,
    output_dir: Path,
    *,
    datasets_dir: Path | None,
    device: str | None,
    as_json: bool,
) -> None:
    """Run ``AsyncConfig(**settings)`` from ``sweep``'s base for its one dataset and arch."""
    from medvec.data.download import medmnist_num_classes
    from medvec.simulation.asynchronous import AsyncConfig, run_async, summarize
    from medvec.simulation.sweep import sweep_base

    config = AsyncConfig(**settings)
    (arch,) = sweep.archs
    classes = medmnist_num_classes(config.dataset, datasets_dir)
    with output.progress_steps() as bar:
        task = bar.add_task("base", total=None, info="")

        def on_step(step: int, total: int, **stats: Any) -> None:
            info = output.stats_text(stats, 3)
            bar.update(task, description="pretrain", completed=step, total=total, info=info)

        base = sweep_base(
            sweep,
            config.dataset,
            arch,
            classes,
            output_dir / "cache",
            datasets_dir=datasets_dir,
            device=device,
            on_step=on_step,
        )

        def on_event(name: str, info: dict[str, Any]) -> None:
            if name == "strategy":
                bar.update(task, description=info["strategy"], completed=0, total=config.compute)
                return
            progress = f"t={info['time']:.0f}s acc {info['accuracy']:.3f}"
            bar.update(task, completed=info["compute"], info=progress)

        result = run_async(
            config, base, datasets_dir=datasets_dir, device=device, on_event=on_event
        )
    record = result.to_json()
    rows = summarize(record)
    output_dir.mkdir(parents=True, exist_ok=True)
    record_path = output_dir / "async.json"
    record_path.write_text(json.dumps({**record, "summary": rows}, indent=1))
    figure = plot_async(record, output_dir / "async.png", rows[0].get("target"))
    if as_json:
        output.print_json({"summary": rows, "record": str(record_path), "figure": str(figure)})
        return
    target = rows[0]["target"]
    title = "no sync run: no target" if target is None else f"target {target:.3f}"
    output.table(rows, ASYNC_COLUMNS, title=f"{title} (synchronous FedAvg's final - 1 point)")
    output.note(f"curves in {figure}; every run's settings and series in {record_path}")
