"""``medvec merge``: merge data vectors onto a base offline, with the streaming engine."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hospital_cli import output
from hospital_cli.errors import CliError
from hospital_cli.options import JsonOpt

if TYPE_CHECKING:
    from medvec.calibration import CalibrationRecord
    from medvec.data import ImageArrayDataset
    from medvec.models import ModelSpec

app = typer.Typer()

#: splits ``--calibration`` takes by default, in order of preference (never test)
CALIBRATION_SPLITS = ("val", "train")

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


def calibration_images(
    path: Path, split: str | None, spec: ModelSpec
) -> tuple[ImageArrayDataset, str]:
    """The calibration images of a MedMNIST-style ``.npz`` shaped for ``spec``, and the split
    used: ``split`` when given, else ``val``, else ``train``."""
    import zipfile

    import numpy as np

    from medvec.data import load_npz

    if not path.is_file():
        raise CliError(
            f"--calibration {path}: no such file",
            hint="give a MedMNIST-style .npz with val_images (or train_images)",
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CliError(
            f"--calibration {path} is not a readable .npz file ({exc})",
            hint="give a MedMNIST-style .npz with val_images (or train_images)",
        ) from exc
    candidates = [split] if split else list(CALIBRATION_SPLITS)
    chosen = next((c for c in candidates if f"{c}_images" in names), None)
    if chosen is None:
        present = sorted(n.removesuffix("_images") for n in names if n.endswith("_images"))
        raise CliError(
            f"--calibration {path} has no {' or '.join(candidates)} images "
            f"(splits: {', '.join(present) or 'none'})",
            hint="name one with --calibration-split",
        )
    images = load_npz(path, chosen, in_channels=spec.in_channels, image_size=spec.image_size)
    return images, chosen


def recalibrate_file(
    path: Path, images: ImageArrayDataset, source: str, split: str
) -> CalibrationRecord:
    """Recompute the BatchNorm statistics of the model file ``path`` on ``images`` and
    rewrite it (atomically) with a ``calibration`` record added to its provenance."""
    from medvec.calibration import recalibrate_bn
    from medvec.models import load_model_file, read_model_provenance, save_model_file

    model, spec = load_model_file(path)
    record = recalibrate_bn(model, images, source=source, split=split)
    provenance = {**read_model_provenance(path), "calibration": record.model_dump()}
    save_model_file(path, model, spec, provenance)
    return record


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
    calibration: Annotated[
        Path | None,
        typer.Option(
            help="MedMNIST-style .npz whose images recompute the merged model's BatchNorm "
            "statistics (labels unused).",
        ),
    ] = None,
    calibration_split: Annotated[
        str | None,
        typer.Option(
            "--calibration-split", help="Split of --calibration (default: val, else train)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Merge data vectors onto their base and write the merged full model.

    weighted_mean weighs by training samples unless --weights is given;
    task_arithmetic sums times --lambda; ties trims to --density, elects signs and
    takes the disjoint mean; dare drops with --drop-rate and rescales; median and
    trimmed_mean are coordinate-wise and robust to outliers.

    The merge averages BatchNorm running statistics; --calibration recomputes them
    on the given images afterwards and records it in the model's provenance.

    Example: medvec merge --base base.safetensors --strategy ties --density 0.2
    --lambda 1.0 --calibration val.npz -o merged.safetensors v1.safetensors v2.safetensors
    """
    from medvec.hashing import sha256_file
    from medvec.merging import MergeSpec, merge_files
    from medvec.models import read_model_spec

    images, split = None, ""
    if calibration is not None:  # checked before any work, so a bad file costs nothing
        images, split = calibration_images(calibration, calibration_split, read_model_spec(base))

    given = {
        "lambda": lambda_,
        "density": density,
        "drop_rate": drop_rate,
        "trim_fraction": trim_fraction,
    }
    spec = MergeSpec.checked(
        strategy=strategy.value,
        params={name: value for name, value in given.items() if value is not None},
        seed=seed,
    )
    with output.progress_steps(transient=as_json) as bar:
        task = bar.add_task(f"merge {len(vectors)} vectors ({strategy.value})", info="", total=None)
        result = merge_files(
            base,
            vectors,
            out,
            strategy=spec.strategy,
            params=spec.params,
            weights=parse_weights(weights),
            seed=spec.seed,
            progress=lambda done, total, key: bar.update(
                task, completed=done, total=total, info=key
            ),
        )
        record = None
        if calibration is not None and images is not None:
            bar.update(  # a phase of its own: a log gets its line
                task,
                description="recalibrate",
                info=f"BatchNorm statistics on {calibration.name} ({split})",
            )
            record = recalibrate_file(out, images, calibration.name, split)
            result = result.model_copy(update={"sha256": sha256_file(out)})
    if as_json:
        output.print_json(
            {**result.model_dump(mode="json"), "calibration": record and record.model_dump()}
        )
        return
    output.success(
        f"wrote {result.path} ({result.num_tensors} tensors, sha256 {result.sha256[:12]}…) "
        f"in {result.seconds:.2f}s"
    )
    summary = {"strategy": result.strategy, "params": result.params, "weights": result.weights}
    if record is not None:
        summary["calibration"] = (
            f"{record.images} images of {record.source} ({record.split}), {record.layers} "
            "BatchNorm layers"
        )
    output.key_values(summary, title="merge")
