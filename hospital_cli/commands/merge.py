"""``medvec merge``: merge data vectors onto a base offline, with the streaming engine."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from hospital_cli import output
from hospital_cli.errors import CliError
from hospital_cli.options import JsonOpt

app = typer.Typer()

# The names of medvec.merging.list_strategies(), spelled out so that `medvec --help`
# does not import torch; a test keeps the two lists equal.
STRATEGY_NAMES = ("weighted_mean", "task_arithmetic", "ties", "dare", "median", "trimmed_mean")
Strategy = StrEnum("Strategy", {name: name for name in STRATEGY_NAMES})  # type: ignore[misc]


def parse_weights(text: str | None) -> list[float] | None:
    """``"1,2.5,3"`` -> ``[1.0, 2.5, 3.0]``."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CliError(
            f"--weights {text!r} is not a comma-separated list of numbers",
            hint="e.g. --weights 1200,800,400",
        ) from None


@app.command("merge")
def merge(
    vectors: Annotated[
        list[Path],
        typer.Argument(exists=True, dir_okay=False, help="Data vector files to merge."),
    ],
    base: Annotated[
        Path, typer.Option("--base", exists=True, dir_okay=False, help="The base model file.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the merged model.")],
    strategy: Annotated[
        Strategy, typer.Option("--strategy", "-s", help="How to combine the vectors.")
    ] = Strategy("weighted_mean"),
    weights: Annotated[
        str | None,
        typer.Option(help="Comma-separated weights, one per vector (default: by strategy)."),
    ] = None,
    lambda_: Annotated[
        float | None,
        typer.Option("--lambda", help="Scale of the merged delta (task_arithmetic, ties, dare)."),
    ] = None,
    density: Annotated[
        float | None, typer.Option(help="Fraction of entries TIES keeps per tensor (0, 1].")
    ] = None,
    drop_rate: Annotated[
        float | None, typer.Option("--drop-rate", help="DARE drop probability [0, 1).")
    ] = None,
    trim_fraction: Annotated[
        float | None,
        typer.Option("--trim-fraction", help="Fraction trimmed at each end [0, 0.5)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of random strategies (DARE).")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Merge data vectors onto their base and write the merged full model.

    weighted_mean weighs by training samples unless --weights is given;
    task_arithmetic sums times --lambda; ties trims to --density, elects signs and
    takes the disjoint mean; dare drops with --drop-rate and rescales; median and
    trimmed_mean are coordinate-wise and robust to outliers.

    Example: medvec merge --base base.safetensors --strategy ties --density 0.2
    --lambda 1.0 -o merged.safetensors v1.safetensors v2.safetensors v3.safetensors
    """
    from medvec.merging import merge_files

    given = {
        "lambda": lambda_,
        "density": density,
        "drop_rate": drop_rate,
        "trim_fraction": trim_fraction,
    }
    params = {name: value for name, value in given.items() if value is not None}
    with output.progress_steps(transient=as_json) as bar:
        task = bar.add_task(f"merge {len(vectors)} vectors ({strategy.value})", info="", total=None)
        result = merge_files(
            base,
            vectors,
            out,
            strategy=strategy.value,
            params=params,
            weights=parse_weights(weights),
            seed=seed,
            progress=lambda done, total, key: bar.update(
                task, completed=done, total=total, info=key
            ),
        )
    if as_json:
        output.print_json(result.model_dump(mode="json"))
        return
    output.success(
        f"wrote {result.path} ({result.num_tensors} tensors, sha256 {result.sha256[:12]}…) "
        f"in {result.seconds:.2f}s"
    )
    output.key_values(
        {"strategy": result.strategy, "params": result.params, "weights": result.weights},
        title="merge",
    )
