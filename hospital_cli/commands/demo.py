"""``medvec demo``: the whole system on real MedMNIST images, in one command.

Starts the registry and a worker on the embedded default (SQLite, local blobs, no
Redis), makes a base model, simulates hospitals that fine-tune and push at their own
pace, merges as vectors arrive, evaluates, promotes and runs several generations.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hospital_cli import output
from hospital_cli.options import DeviceOpt

DATASETS_ENV = "MEDVEC_DATASETS_DIR"

app = typer.Typer()

QUICK = {
    "hospitals": 3,
    "generations": 2,
    "max_train": 450,
    "max_val": 150,
    "max_test": 300,
    "pretrain_samples": 600,
    "pretrain_steps": 30,
    "max_delay": 3.0,
}


class ProgressUi:
    """Hospitals and phases as lines of one rich progress display (thread-safe)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.phase_task = progress.add_task("[bold]MedVec", total=None, info="starting")
        self.tasks: dict[str, int] = {}
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
    hospitals: Annotated[int, typer.Option(min=1, help="Simulated hospitals.")] = 5,
    generations: Annotated[int, typer.Option(min=1, help="Generations (rounds of bases).")] = 3,
    alpha: Annotated[
        float, typer.Option(min=0.0, help="Dirichlet(alpha) non-IID split of the labels.")
    ] = 0.5,
    iid: Annotated[bool, typer.Option("--iid", help="IID split instead of Dirichlet.")] = False,
    arch: Annotated[str, typer.Option(help="resnet18 or flra_resnet18 ...")] = "resnet18",
    max_train: Annotated[int, typer.Option(min=1, help="Training images in all.")] = 1500,
    max_test: Annotated[int, typer.Option(min=1, help="Cap on test images.")] = 1000,
    epochs: Annotated[int, typer.Option(min=1, help="Local epochs per generation.")] = 1,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Local torchvision checkpoint for the base.")
    ] = None,
    quick: Annotated[bool, typer.Option(help="3 hospitals, 2 generations, small data.")] = False,
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
    Example: medvec demo --dataset pneumoniamnist --hospitals 8 --iid
    """
    from hospital_cli.demo.plot import plot_report
    from hospital_cli.demo.report import result_rows, rich_table, write_outputs
    from hospital_cli.demo.run import run_demo
    from hospital_cli.demo.state import DemoSettings
    from medvec.models import ModelSpec
    from medvec.pretrain import PretrainConfig, ensure_base, pretrain_arch

    values = {
        "hospitals": hospitals,
        "generations": generations,
        "max_train": max_train,
        "max_val": 300,
        "max_test": max_test,
        "pretrain_samples": None,
        "pretrain_steps": 500,
        "max_delay": 6.0,
    }
    if quick:
        values.update(QUICK)
    datasets_dir = datasets_dir or _default_datasets_dir(output_dir)
    settings = DemoSettings(
        output=output_dir.resolve(),
        dataset=dataset,
        alpha=None if iid else alpha,
        arch=arch,
        epochs=epochs,
        checkpoint=checkpoint,
        seed=seed,
        datasets_dir=datasets_dir,
        device=device,
        **values,  # type: ignore[arg-type]
    )
    pretrain = PretrainConfig(
        arch=pretrain_arch(arch),
        stem=settings.stem,
        steps=settings.pretrain_steps,
        max_samples=settings.pretrain_samples,
        seed=seed,
    ).excluding(dataset)

    def make_base(num_classes: int) -> Path:
        spec = ModelSpec(
            arch=arch, num_classes=num_classes, in_channels=3, image_size=28, stem=settings.stem
        )
        return ensure_base(
            spec,
            settings.output / "cache",
            config=pretrain,
            checkpoint=checkpoint,
            datasets_dir=datasets_dir,
            device=device,
        )

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
    rows = result_rows(report)
    title = (
        f"MedVec demo — {dataset}, {settings.hospitals} hospitals, "
        f"{settings.generations} generations, "
        f"{'IID' if settings.alpha is None else f'Dirichlet alpha={settings.alpha:g}'}"
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
    paths = write_outputs(report, rows, settings.output)
    plot = plot_report(report, settings.output / "accuracy.png")
    output.success(f"finished in {report.seconds:.0f} s")
    output.note(f"table: {paths['csv']}  {paths['json']}  plot: {plot}")
