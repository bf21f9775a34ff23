"""``medvec train``: fine-tune the cached base on local data and write a data vector."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from hospital_cli import output
from hospital_cli.bases import local_base
from hospital_cli.errors import CliError
from hospital_cli.local import TrainOutcome, TrainRequest, train_vector
from hospital_cli.options import (
    BatchOpt,
    DataOpt,
    DeviceOpt,
    JsonOpt,
    ProfileOpt,
    ServerOpt,
    TokenOpt,
    make_client,
)
from medvec.training_config import Optimizer, Schedule, TrainConfig

app = typer.Typer()


def _default(name: str) -> Any:
    """The recipe's default for a setting: the options never restate them."""
    return TrainConfig.model_fields[name].default


STEPS_HELP = (
    "Train for exactly N optimiser steps, cycling over the data as often as it takes "
    "(instead of --epochs; not with --dp-sgd, whose budget is in epochs)."
)
OPTIMIZER_HELP = (
    f"sgd (Nesterov momentum {_default('momentum')}), adam, or adamw (decoupled weight decay)."
)
CONTINUE_HELP = (
    "Start from this model, written by an earlier `medvec train --save-model` on the same "
    "base, instead of the base; the vector is still against the base, so it holds that "
    "job's work and this one's. For when production has not moved since your last push "
    "(the registry keeps only your newest vector). Not with --dp-noise or --dp-sgd."
)
SCHEDULE_HELP = (
    "cosine: after the warm-up, decay the learning rate to zero along a half cosine; "
    "constant: keep it at --lr."
)


@app.command()
def train(
    data: DataOpt,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Vector file to write.")] = None,
    base: Annotated[
        Path | None, typer.Option("--base", help="Base model file (default: the pulled base).")
    ] = None,
    hospital: Annotated[
        str | None, typer.Option(help="Hospital name (default: asked from the registry).")
    ] = None,
    epochs: Annotated[
        int, typer.Option(min=1, help="Passes over the training data (unless --steps is given).")
    ] = _default("epochs"),
    steps: Annotated[int | None, typer.Option(min=1, metavar="N", help=STEPS_HELP)] = _default(
        "steps"
    ),
    optimizer: Annotated[Optimizer, typer.Option(help=OPTIMIZER_HELP)] = _default("optimizer"),
    lr: Annotated[
        float, typer.Option("--lr", help="Peak learning rate (reached after the warm-up).")
    ] = _default("lr"),
    weight_decay: Annotated[
        float,
        typer.Option(help="Weight decay: an L2 penalty with sgd and adam, decoupled with adamw."),
    ] = _default("weight_decay"),
    schedule: Annotated[Schedule, typer.Option(help=SCHEDULE_HELP)] = _default("schedule"),
    warmup: Annotated[
        float,
        typer.Option(help="Fraction of the steps over which the learning rate rises to --lr."),
    ] = _default("warmup"),
    label_smoothing: Annotated[
        float,
        typer.Option(help="Share of each target spread evenly over all classes (0 turns it off)."),
    ] = _default("label_smoothing"),
    batch_size: BatchOpt = _default("batch_size"),
    augment: Annotated[
        bool, typer.Option(help="Random horizontal flips and 2-pixel shifts (crops).")
    ] = _default("augment"),
    val_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of the data held out to validate.")
    ] = 0.1,
    seed: Annotated[
        int, typer.Option(help="Seeds the validation split, shuffling, augmentation and noise.")
    ] = _default("seed"),
    max_samples: Annotated[
        int | None, typer.Option(min=1, help="Use only the first N samples (quick runs).")
    ] = None,
    device: DeviceOpt = None,
    dp_clip: Annotated[
        float | None, typer.Option(min=0.0, help="Clip the vector's L2 norm (or per-sample, SGD).")
    ] = None,
    dp_noise: Annotated[
        float | None, typer.Option(min=0.0, help="Gaussian noise multiplier sigma (std sigma*C).")
    ] = None,
    dp_sgd: Annotated[bool, typer.Option(help="DP-SGD with Opacus (per-sample clipping).")] = False,
    dp_delta: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1e-5,
    save_model: Annotated[
        Path | None, typer.Option(help="Also write the fine-tuned model (for `medvec eval`).")
    ] = None,
    continue_from: Annotated[Path | None, typer.Option(metavar="MODEL", help=CONTINUE_HELP)] = None,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="Extra metadata key=value (repeatable).")
    ] = None,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune the base on local data; write the data vector and its validation metrics.

    Examples:
      medvec train --data pneumoniamnist.npz --epochs 3
      medvec train --data small-ward.npz --steps 500 --label-smoothing 0.1
      medvec train --data xrays/ --dp-clip 1.0 --dp-noise 0.5 -o vectors/xrays.safetensors
      medvec train --data xrays/ --continue-from ft.safetensors --save-model ft.safetensors
    """
    if not data.exists():
        raise CliError(f"no data at {data}", hint="give a .npz, an image folder or a DICOM folder")
    if dp_sgd and (dp_clip is None or dp_noise is None):
        raise CliError("--dp-sgd needs --dp-clip (per-sample bound) and --dp-noise (multiplier)")
    if dp_noise is not None and dp_clip is None:
        raise CliError("--dp-noise needs --dp-clip (the noise std is SIGMA times the bound)")
    base_path, base_record = local_base(base)
    hospital = hospital or _hospital_name(profile, server, token)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target = out or Path("vectors") / f"{hospital}-{data.stem}-{stamp}.safetensors"
    try:
        request = TrainRequest(
            base=base_path,
            base_record=base_record,
            data=data,
            out=target,
            hospital=hospital,
            recipe=TrainConfig(
                epochs=epochs,
                steps=steps,
                optimizer=optimizer,
                lr=lr,
                weight_decay=weight_decay,
                schedule=schedule,
                warmup=warmup,
                label_smoothing=label_smoothing,
                batch_size=batch_size,
                augment=augment,
                seed=seed,
            ),
            val_fraction=val_fraction,
            device=device,
            max_samples=max_samples,
            dp_clip=dp_clip,
            dp_noise=dp_noise,
            dp_sgd=dp_sgd,
            dp_delta=dp_delta,
            save_model=save_model,
            continue_from=continue_from,
            extra=_parse_meta(meta or []),
        )
    except ValidationError as exc:
        raise _invalid_options(exc) from exc
    outcome = _train_with_progress(request)
    if as_json:
        output.print_json(
            {
                "vector": str(outcome.vector),
                "metrics_path": str(outcome.metrics_path),
                "metadata": outcome.metadata,
                "validation": outcome.metrics,
            }
        )
        return
    _summary(outcome.vector, outcome.metadata, outcome.metrics)


def _train_with_progress(request: TrainRequest) -> TrainOutcome:
    """``train_vector`` with a progress bar of its optimiser steps (loss, accuracy)."""
    with output.progress_steps() as bar:
        task = bar.add_task("train", total=None, info="")

        def on_step(step: Any = None, total: int | None = None, **stats: Any) -> None:
            bar.update(task, completed=step, total=total, info=output.stats_text(stats))

        return train_vector(request, on_step=on_step)


def _summary(vector: Path, metadata: dict[str, Any], metrics: dict[str, Any]) -> None:
    output.success(f"vector written: {vector} ({metadata['num_samples']} samples)")
    shown = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    if shown:
        output.key_values(shown, title="local validation")
    privacy = metadata.get("privacy") or {}
    if privacy.get("epsilon") is not None:
        output.note(
            f"privacy: epsilon {privacy['epsilon']:.3f} at delta {privacy.get('delta')} "
            f"({privacy.get('accountant')}), clip {privacy.get('dp_clip')}, "
            f"noise {privacy.get('dp_noise')}"
        )
    elif privacy:
        output.note(f"privacy: clipped to L2 norm {privacy.get('dp_clip')} (no noise: no epsilon)")


def _invalid_options(exc: ValidationError) -> CliError:
    """A refused recipe, each problem named by its option (``--label-smoothing``, not the field)."""
    problems = []
    for error in exc.errors():
        option = "--" + "-".join(str(part) for part in error["loc"]).replace("_", "-")
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{option}: {message}" if error["loc"] else message)
    return CliError("invalid training settings: " + "; ".join(problems))


def _hospital_name(profile: str | None, server: str | None, token: str | None) -> str:
    try:
        with make_client(profile, server, token) as client:
            name = client.whoami().get("hospital_name")
    except CliError as exc:
        raise CliError(
            "cannot tell which hospital this is", hint="pass --hospital NAME or `medvec login`"
        ) from exc
    if not name:
        raise CliError("this token belongs to no hospital", hint="pass --hospital NAME")
    return str(name)


def _parse_meta(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--meta {item!r} is not key=value")
        pairs[key] = value
    return pairs
