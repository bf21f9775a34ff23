"""``medvec simulate``: N hospitals, every merge strategy, in one process (no registry).

One point (``--hospitals 10 --alpha 0.3``) or the reproduction sweep (``--sweep``):
datasets x numbers of hospitals x architectures, as in ``benchmarks/reproduce.py``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

import typer

from hospital_cli import output
from hospital_cli.options import DeviceOpt, JsonOpt, Stem
from medvec.training_config import Recipe

if TYPE_CHECKING:
    from rich.progress import TaskID

    from medvec.simulation import SweepConfig

app = typer.Typer()


class _SimDefaults(TypedDict):
    max_train: int
    generations: int
    epochs: int
    lr: float | None
    batch_size: int


class _PretrainDefaults(TypedDict):
    steps: int


class _AsyncDefaults(TypedDict):
    compute_rounds: float
    local_steps: int


class _PolicyDefaults(TypedDict):
    k: int
    stale: str
    staleness_power: float
    server_lr: float
    generations: str


# SimulationConfig's, PretrainConfig's, AsyncConfig's and PolicyConfig's defaults, spelled
# out so that `medvec --help` does not import torch; a test keeps them equal.
SIM_DEFAULTS: _SimDefaults = {
    "max_train": 2500,
    "generations": 6,
    "epochs": 3,
    "lr": None,
    "batch_size": 32,
}
PRETRAIN_DEFAULTS: _PretrainDefaults = {"steps": 500}
ASYNC_DEFAULTS: _AsyncDefaults = {"compute_rounds": 24.0, "local_steps": 8}
POLICY_DEFAULTS: _PolicyDefaults = {
    "k": 3,
    "stale": "weight",
    "staleness_power": 0.5,
    "server_lr": 1.0,
    "generations": "merged",
}


class StaleOpt(StrEnum):
    exclude = "exclude"
    weight = "weight"


class GenerationsOpt(StrEnum):
    merged = "merged"
    promoted = "promoted"


DatasetsDirOpt = Annotated[
    Path | None,
    typer.Option("--datasets-dir", help="Folder of MedMNIST .npz files (MEDVEC_DATASETS_DIR)."),
]


def _csv_ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _csv_strs(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


StemOpt = Annotated[
    Stem,
    typer.Option(
        help="ResNet stem: imagenet (7x7/2 + max-pool, fastest on a CPU), small (3x3/1, "
        "MedMNIST v2's layout, ~8x slower), strided (3x3/2), auto (small up to 64 px)."
    ),
]


@app.command()
def simulate(
    dataset: Annotated[
        str,
        typer.Option(
            help="Any MedMNIST 2D .npz name in the datasets folder (comma list: --sweep)."
        ),
    ] = "pneumoniamnist",
    hospitals: Annotated[
        str, typer.Option(help="Number of hospitals (comma list with --sweep).")
    ] = "5",
    arch: Annotated[
        str, typer.Option(help="resnet10, resnet18, flra_resnet18 ... (comma list with --sweep).")
    ] = "resnet10",
    stem: StemOpt = Stem.imagenet,
    alpha: Annotated[
        float | None, typer.Option(min=0.0, help="Dirichlet non-IID split with this alpha.")
    ] = None,
    max_train: Annotated[
        int, typer.Option(min=1, help="Train images used (all hospitals).")
    ] = SIM_DEFAULTS["max_train"],
    max_test: Annotated[int | None, typer.Option(min=1, help="Cap on test images.")] = None,
    generations: Annotated[
        int,
        typer.Option(
            min=1, help="Generations (rounds): hospitals restart from the promoted model."
        ),
    ] = SIM_DEFAULTS["generations"],
    epochs: Annotated[
        int, typer.Option(min=1, help="Local epochs per hospital and generation.")
    ] = SIM_DEFAULTS["epochs"],
    steps: Annotated[
        int | None,
        typer.Option(min=1, help="Local optimiser steps per generation (instead of --epochs)."),
    ] = None,
    recipe: Annotated[
        Recipe,
        typer.Option(
            help="Local training: sgd (SGD, cosine, flips and crops; best for IID and pooled "
            "training) or adam (constant Adam, no augmentation; merges best when "
            "hospitals' labels differ)."
        ),
    ] = "sgd",
    lr: Annotated[
        float | None,
        typer.Option(min=0.0, help="Peak learning rate [the recipe's: sgd 0.05, adam 0.001]."),
    ] = SIM_DEFAULTS["lr"],
    batch_size: Annotated[int, typer.Option(min=1)] = SIM_DEFAULTS["batch_size"],
    calibrate: Annotated[
        bool,
        typer.Option(help="Recompute merged models' BatchNorm statistics on validation images."),
    ] = True,
    pretrain_steps: Annotated[
        int, typer.Option(min=1, help="Optimiser steps of the base's pretraining (cached).")
    ] = PRETRAIN_DEFAULTS["steps"],
    pretrain_sources: Annotated[
        str | None,
        typer.Option(
            help="Comma list of pretraining sets (default: the known ones but the target)."
        ),
    ] = None,
    pretrain_samples: Annotated[
        int | None, typer.Option(min=1, help="Cap on images per pretraining set.")
    ] = None,
    sweep: Annotated[bool, typer.Option(help="Run the grid of every comma list.")] = False,
    asynchronous: Annotated[
        bool,
        typer.Option(
            "--async",
            help="Hospitals on a virtual clock (own speeds, a straggler, a late joiner, an "
            "offline one): MedVec's registry policy against synchronous FedAvg, with a "
            "deadline, FedAsync and FedBuff at equal compute. Writes async.json and async.png.",
        ),
    ] = False,
    rounds: Annotated[
        float,
        typer.Option(min=0.1, help="--async: compute budget, in rounds of every hospital's job."),
    ] = ASYNC_DEFAULTS["compute_rounds"],
    local_steps: Annotated[
        int, typer.Option(min=1, help="--async: optimiser steps of one hospital's job.")
    ] = ASYNC_DEFAULTS["local_steps"],
    merge_k: Annotated[
        int, typer.Option(min=1, help="--async: merge after this many new vectors.")
    ] = POLICY_DEFAULTS["k"],
    stale: Annotated[
        StaleOpt,
        typer.Option(help="--async: a vector of an older generation is left out or weighted."),
    ] = StaleOpt(POLICY_DEFAULTS["stale"]),
    staleness_power: Annotated[
        float, typer.Option(min=0.0, help="--async: stale weight (1 + staleness) ** -power.")
    ] = POLICY_DEFAULTS["staleness_power"],
    server_lr: Annotated[
        float, typer.Option(min=0.0, help="--async: step along the merged vectors' mean.")
    ] = POLICY_DEFAULTS["server_lr"],
    generations_from: Annotated[
        GenerationsOpt,
        typer.Option(
            help="--async: the versions hospitals train from next: every merged one (the "
            "registry's MEDVEC_AUTO_GENERATION default) or only promoted ones."
        ),
    ] = GenerationsOpt(POLICY_DEFAULTS["generations"]),
    seed: int = 0,
    output_dir: Annotated[
        Path, typer.Option("--output", "-o", help="Where results and the base cache go.")
    ] = Path("simulation-output"),
    datasets_dir: DatasetsDirOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Simulate hospitals fine-tuning one base over generations and compare merge strategies
    with their local models and pooled training (test split; every choice on validation).

    The base is pretrained once on the other MedMNIST sets and cached in OUTPUT/cache.

    Example: medvec simulate --dataset bloodmnist --hospitals 10 --alpha 0.5
    Example: medvec simulate --sweep --dataset pneumoniamnist,bloodmnist --hospitals 5,10
    Example: medvec simulate --async --dataset bloodmnist --hospitals 10 --alpha 0.5
    """
    from medvec.pretrain import PretrainConfig
    from medvec.simulation import SimulationConfig, SweepConfig

    point = SimulationConfig(
        partition="iid" if alpha is None else "dirichlet",
        alpha=alpha or 0.5,
        max_train=max_train,
        max_test=max_test,
        generations=generations,
        epochs=epochs,
        steps=steps,
        recipe=recipe,
        lr=lr,
        batch_size=batch_size,
        calibrate=calibrate,
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
        stem=stem.value,
        pretrain=PretrainConfig(
            steps=pretrain_steps,
            max_samples=pretrain_samples,
            seed=seed,
            **({"sources": _csv_strs(pretrain_sources)} if pretrain_sources else {}),
        ),
    )
    if asynchronous:
        if sweep:
            raise typer.BadParameter("--async runs one setting: drop --sweep")
        from hospital_cli.async_sim import run_clocked

        shared = {"partition", "alpha", "max_train", "max_test", "recipe", "lr", "batch_size"}
        policy = {
            "k": merge_k,
            "stale": stale.value,
            "staleness_power": staleness_power,
            "server_lr": server_lr,
            "generations": generations_from.value,
        }
        settings = {
            **point.model_dump(include=shared | {"calibrate", "seed"}),
            "dataset": dataset,
            "hospitals": counts[0],
            "compute_rounds": rounds,
            "local_steps": local_steps,
            "policies": {"medvec": policy},
        }
        run_clocked(
            settings, config, output_dir, datasets_dir=datasets_dir, device=device, as_json=as_json
        )
        return
    _sweep(config, output_dir, datasets_dir=datasets_dir, device=device, as_json=as_json)


def _sweep(
    config: SweepConfig,
    output_dir: Path,
    *,
    datasets_dir: Path | None,
    device: str | None,
    as_json: bool,
) -> None:
    """Run the generations sweep with a progress bar (and one per base being pretrained),
    then print its table."""
    from medvec.simulation import markdown_table, run_sweep

    with output.progress_steps() as bar:
        task = bar.add_task("simulate", total=None, info="")
        pretraining: dict[str, TaskID] = {}  # a counted task per base being pretrained

        def on_event(name: str, info: dict[str, Any]) -> None:
            if name == "pretrain":
                base, total = info["base"], info["total"]
                if base not in pretraining:
                    pretraining[base] = bar.add_task(f"pretrain {base}", total=total, info="")
                stats = output.stats_text(info, 3)  # the float statistics: loss, acc
                bar.update(pretraining[base], completed=info["step"], total=total, info=stats)
                return
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
