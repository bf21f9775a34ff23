"""``medvec demo``: the whole system on real MedMNIST images, in one command.

Starts the registry and a worker on the embedded default (SQLite, local blobs, no
Redis), makes a base model and simulates hospitals that fine-tune and push at their own
pace — a straggler and a late joiner among them — while the registry merges as vectors
arrive, evaluates and promotes through its gate (``--lockstep``: generations that wait
for every hospital, merged and promoted by the admin).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from hospital_cli import output
from hospital_cli.demo.state import STRATEGIES, DemoReport, DemoSettings, Ui
from hospital_cli.errors import CliError
from hospital_cli.options import DeviceOpt

DATASETS_ENV = "MEDVEC_DATASETS_DIR"

app = typer.Typer()

# What the flags left unset default to. Both profiles share the pretrained base (the
# same PretrainConfig), so it is made once per machine; docs/demo.md gives the
# measurements behind these numbers.
DEFAULTS: dict[str, Any] = {
    "hospitals": 10,
    "generations": 5,
    "alpha": 1.0,
    "max_train": 12000,  # BloodMNIST's whole training split, 11,959 images
    "max_val": 500,
    "max_test": None,  # BloodMNIST's whole test split, 3,421 images
    "epochs": 1,
    "strategies": "weighted_mean,task_arithmetic",
    "max_delay": 6.0,
}
QUICK: dict[str, Any] = {
    **DEFAULTS,
    "hospitals": 5,  # a straggler, a late joiner and three others
    "generations": 3,
    "alpha": 0.5,
    "max_train": 1800,
    "max_val": 300,
    "max_test": 1000,
    "max_delay": 2.0,
}


class ProgressUi(Ui):
    """Hospitals and phases as lines of one rich progress display (thread-safe)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.phase_task = progress.add_task("[bold]MedVec", total=None, info="starting")
        self.tasks: dict[str, TaskID] = {}
        self.lock = threading.Lock()
        self.last = ""

    def phase(self, text: str) -> None:
        self.progress.update(self.phase_task, info=text)
        self._log(text)

    def _log(self, text: str) -> None:
        """Without a terminal the display does not refresh: log each new line instead."""
        console = self.progress.console
        if not console.is_terminal and text != self.last:
            console.print(f"{time.strftime('%H:%M:%S')} {text}", highlight=False, markup=False)
        self.last = text

    def hospital(
        self, name: str, text: str, done: float | None = None, total: float | None = None
    ) -> None:
        with self.lock:
            if name not in self.tasks:
                self.tasks[name] = self.progress.add_task(name, total=None, info="")
        self.progress.update(self.tasks[name], info=text, completed=done or 0, total=total)
        if text.startswith(("pushed", "failed", "done")):
            self._log(f"{name}: {text}")


def _default_datasets_dir(output_dir: Path) -> Path | None:
    """Without MEDVEC_DATASETS_DIR, missing sets are downloaded into OUTPUT/datasets."""
    if os.environ.get(DATASETS_ENV):
        return None
    folder = output_dir.resolve() / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    output.note(f"{DATASETS_ENV} is not set: datasets are read from (or downloaded to) {folder}")
    return folder


@app.command()
def demo(
    output_dir: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for results, plot and caches.")
    ] = Path("demo-output"),
    dataset: Annotated[str, typer.Option(help="Target MedMNIST set.")] = "bloodmnist",
    hospitals: Annotated[int | None, typer.Option(min=1, help="Simulated hospitals [10].")] = None,
    generations: Annotated[
        int | None, typer.Option(min=1, help="Generations (rounds of bases) [5].")
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option(min=0.0, help="Dirichlet(alpha) non-IID split of the labels [1.0]."),
    ] = None,
    iid: Annotated[bool, typer.Option("--iid", help="IID split instead of Dirichlet.")] = False,
    arch: Annotated[
        str, typer.Option(help="resnet10 (fast on a CPU), resnet18, flra_resnet18 ...")
    ] = "resnet10",
    max_train: Annotated[
        int | None, typer.Option(min=1, help="Training images in all [12000].")
    ] = None,
    max_test: Annotated[
        int | None, typer.Option(min=1, help="Cap on test images [the whole test split].")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Local epochs per generation [1].")
    ] = None,
    strategies: Annotated[
        str | None,
        typer.Option(
            help="Comma list of merge strategies the admin runs each generation "
            "[weighted_mean,task_arithmetic]; any of " + ", ".join(STRATEGIES) + ", dare ..."
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Local torchvision checkpoint for the base.")
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            help="5 hospitals, 3 generations, alpha 0.5, 1,800 images, 1,000 test images "
            "(flags given as well still win)."
        ),
    ] = False,
    lockstep: Annotated[
        bool,
        typer.Option(
            "--lockstep",
            help="Generations with a barrier: every hospital trains, the last push ends the "
            "generation, the admin merges and promotes (the schedule before hospitals "
            "ran asynchronously).",
        ),
    ] = False,
    straggler_slowdown: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="One hospital's jobs take this many times their training time (1: none).",
        ),
    ] = 10.0,
    late_join: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.99,
            help="One hospital joins once this share of the work is done (0: none).",
        ),
    ] = 1 / 3,
    references: Annotated[
        bool,
        typer.Option(help="Train the references: every hospital alone and the centralized model."),
    ] = True,
    score_locals: Annotated[
        bool,
        typer.Option(
            help="Also score every generation's local fine-tunes on the test split "
            "(one evaluation per hospital and generation)."
        ),
    ] = False,
    seed: int = 0,
    datasets_dir: Annotated[
        Path | None,
        typer.Option("--datasets-dir", help="Folder of MedMNIST .npz (MEDVEC_DATASETS_DIR)."),
    ] = None,
    device: DeviceOpt = None,
) -> None:
    """Run registry, worker and simulated hospitals on real data; print and save the results.

    Example: medvec demo
    Example: medvec demo --quick --output /tmp/demo
    Example: medvec demo --lockstep
    Example: medvec demo --dataset pneumoniamnist --hospitals 8 --iid
    """
    from hospital_cli.demo.run import pretrained_base, run_demo
    from medvec.merging import list_strategies

    given = {
        "hospitals": hospitals,
        "generations": generations,
        "max_train": max_train,
        "max_test": max_test,
        "epochs": epochs,
        "strategies": strategies,
        "alpha": alpha,
    }
    values = {**(QUICK if quick else DEFAULTS)}
    values.update({k: v for k, v in given.items() if v is not None})
    chosen = tuple(s.strip() for s in str(values.pop("strategies")).split(",") if s.strip())
    unknown = sorted(set(chosen) - set(list_strategies()))
    if not chosen or unknown:
        raise CliError(
            f"unknown merge strategies: {', '.join(unknown) or '(none given)'}",
            hint=f"choose from {', '.join(list_strategies())}",
        )
    split_alpha = values.pop("alpha")
    datasets_dir = datasets_dir or _default_datasets_dir(output_dir)
    settings = DemoSettings(
        output=output_dir.resolve(),
        dataset=dataset,
        alpha=None if iid else split_alpha,
        arch=arch,
        checkpoint=checkpoint,
        seed=seed,
        datasets_dir=datasets_dir,
        device=device,
        strategies=chosen,
        score_locals=score_locals,
        lockstep=lockstep,
        straggler_slowdown=straggler_slowdown,
        late_join=late_join,
        references=references,
        **values,
    )
    make_base = pretrained_base(settings)

    progress = Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=output.err_console(),
    )
    with progress:
        report = run_demo(settings, ProgressUi(progress), make_base)
    _report(report, settings)


def _report(report: DemoReport, settings: DemoSettings) -> None:
    """Print the demo's table, its warnings and summary; write its files and figure."""
    from hospital_cli.demo.plot import plot_report
    from hospital_cli.demo.report import result_rows, rich_table, summary, write_outputs

    rows = result_rows(report)
    split = "IID" if settings.alpha is None else f"Dirichlet alpha={settings.alpha:g}"
    schedule = (
        f"lockstep, {settings.generations} generations"
        if settings.lockstep
        else f"asynchronous, the work of {settings.generations} generations"
    )
    title = (
        f"MedVec demo — {settings.dataset}, {architecture_label(settings.arch, settings.stem)}, "
        f"{settings.hospitals} hospitals, {split}, {schedule}"
    )
    console = output.console()
    if not console.is_terminal:
        console = Console(width=120)
    console.print(rich_table(rows, title))
    for event in report.timeline:
        if event["event"] == "merge_failed":
            output.warn(f"a {event['strategy']} merge failed: {event.get('error')}")
    for local in report.locals:
        if local.error:
            output.warn(f"{local.hospital}, generation {local.generation}: {local.error}")
    _print_summary(summary(report))
    paths = write_outputs(report, rows, settings.output)
    plot = plot_report(report, settings.output / "accuracy.png")
    output.success(
        f"finished in {report.seconds:.0f} s; the "
        f"{'lockstep' if settings.lockstep else 'asynchronous'} schedule took "
        f"{report.schedule_s:.0f} s"
    )
    output.note(f"table: {paths['csv']}  {paths['json']}  plot: {plot}")


def architecture_label(arch: str, stem: str, image_size: int = 28) -> str:
    """``resnet18`` + ``imagenet`` -> ``ResNet-18 (ImageNet stem), 28 px``."""
    name = arch.replace("flra_", "FL-RA ").replace("resnet", "ResNet-")
    return f"{name} ({stem} stem), {image_size} px"


def _print_summary(values: dict[str, Any]) -> None:
    accuracy = values["promoted_accuracy"]
    if accuracy is None:
        output.warn("no version was promoted")
        return
    if values["centralized_accuracy"] is None or values["mean_alone_accuracy"] is None:
        output.note(
            f"promoted {values['promoted_strategy']} model: test accuracy {accuracy:.3f} "
            "(references not trained)"
        )
        return
    output.note(
        f"promoted {values['promoted_strategy']} model: test accuracy {accuracy:.3f}; "
        f"hospitals alone {values['mean_alone_accuracy']:.3f} on average "
        f"({values['gain_over_alone']:+.1f} points), best hospital alone "
        f"{values['best_alone_accuracy']:.3f}; centralized {values['centralized_accuracy']:.3f} "
        f"({-values['gap_to_central']:+.1f} points)"
    )
