"""``medvec simulate``: N hospitals, every merge strategy, in one process (no registry).

One point (``--hospitals 10 --alpha 0.3``) or the reproduction sweep (``--sweep``):
datasets x numbers of hospitals x architectures, as in ``benchmarks/reproduce.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hospital_cli import output
from hospital_cli.options import DeviceOpt, JsonOpt

app = typer.Typer()

DatasetsDirOpt = Annotated[
    Path | None,
    typer.Option("--datasets-dir", help="Folder of MedMNIST .npz files (MEDVEC_DATASETS_DIR)."),
]


def _csv_ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _csv_strs(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@app.command()
def simulate(
    dataset: Annotated[str, typer.Option(help="Target MedMNIST set (comma list with --sweep).")] = (
        "pneumoniamnist"
    ),
    hospitals: Annotated[
        str, typer.Option(help="Number of hospitals (comma list with --sweep).")
    ] = "5",
    arch: Annotated[
        str, typer.Option(help="resnet18, flra_resnet18 ... (comma list with --sweep).")
    ] = "resnet18",
    alpha: Annotated[
        float | None, typer.Option(min=0.0, help="Dirichlet non-IID split with this alpha.")
    ] = None,
    max_train: Annotated[
        int, typer.Option(min=1, help="Train images used (all hospitals).")
    ] = 1500,
    max_test: Annotated[int | None, typer.Option(min=1, help="Cap on test images.")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Local epochs per hospital.")] = 1,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    pretrain_samples: Annotated[int, typer.Option(min=1, help="OrganAMNIST images.")] = 3000,
    pretrain_epochs: Annotated[int, typer.Option(min=1)] = 1,
    sweep: Annotated[bool, typer.Option(help="Run the grid of every comma list.")] = False,
    seed: int = 0,
    output_dir: Annotated[
        Path, typer.Option("--output", "-o", help="Where results and the base cache go.")
    ] = Path("simulation-output"),
    datasets_dir: DatasetsDirOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Simulate hospitals fine-tuning one base and compare merge strategies.

    Example: medvec simulate --dataset bloodmnist --hospitals 10 --alpha 0.5
    Example: medvec simulate --sweep --dataset pneumoniamnist,bloodmnist --hospitals 5,10
    """
    from medvec.pretrain import PretrainConfig
    from medvec.simulation import SimulationConfig, SweepConfig, markdown_table, run_sweep

    point = SimulationConfig(
        partition="iid" if alpha is None else "dirichlet",
        alpha=alpha or 0.5,
        max_train=max_train,
        max_test=max_test,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
    )
    datasets, counts, archs = _csv_strs(dataset), _csv_ints(hospitals), _csv_strs(arch)
    if not sweep and (len(datasets), len(counts), len(archs)) != (1, 1, 1):
        raise typer.BadParameter("comma lists need --sweep")
    config = SweepConfig(
        datasets=datasets,
        hospitals=counts,
        archs=archs,
        point=point,
        pretrain=PretrainConfig(max_samples=pretrain_samples, epochs=pretrain_epochs, seed=seed),
    )
    with output.progress_steps() as bar:
        task = bar.add_task("simulate", total=None, info="")

        def on_event(name: str, info: dict[str, Any]) -> None:
            text = " ".join(f"{k}={v}" for k, v in info.items() if k != "reason")
            bar.update(task, description=name, info=text[:80])

        outcome = run_sweep(
            config,
            output_dir,
            output_dir / "cache",
            datasets_dir=datasets_dir,
            device=device,
            on_event=on_event,
        )
    for reason in outcome.skipped:
        output.warn(f"skipped {reason}")
    if as_json:
        output.print_json({"summary": outcome.rows, "skipped": outcome.skipped})
        return
    output.console().print(markdown_table(outcome.rows), markup=False, highlight=False)
    output.note(f"results in {output_dir / 'summary.csv'} and {output_dir / 'results.json'}")
