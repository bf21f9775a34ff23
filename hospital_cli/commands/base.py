"""``medvec base pull | list | pretrain``: fetch the shared base model into the local
cache, or make a strong one offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hospital_cli import output
from hospital_cli.bases import base_cache, pretrained_cache, pull_base
from hospital_cli.options import (
    DeviceOpt,
    JsonOpt,
    ProfileOpt,
    ServerOpt,
    Stem,
    TokenOpt,
    make_client,
)

app = typer.Typer(
    help="The shared base model: pull it, list generations, pretrain one.", no_args_is_help=True
)

# PretrainConfig's defaults, spelled out so that `medvec --help` does not import torch;
# a test keeps them equal.
PRETRAIN_STEPS = 500
PRETRAIN_SOURCES = ("organamnist", "pneumoniamnist", "bloodmnist")


@app.command()
def pull(
    base_id: Annotated[
        str, typer.Option("--id", help="Base id (default: the current generation).")
    ] = "current",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also copy it here.")] = None,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download the current base, verify its sha256 and cache it by sha256.

    Example: medvec base pull            (then `medvec train` uses it)
    """
    with make_client(profile, server, token) as client:
        record, path, cached = pull_base(client, base_id, cache=base_cache())
    if out is not None:
        from hospital_cli.downloads import copy_to

        copy_to(path, out)
    if as_json:
        output.print_json({"base": record, "path": str(out or path), "cached": cached})
        return
    state = "already cached" if cached else "downloaded and verified"
    output.success(f"base {record.get('name')} ({record['id']}) {state}: {out or path}")


@app.command("list")
def list_bases(
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the registered bases (generations).

    Example: medvec base list --json
    """
    with make_client(profile, server, token) as client:
        rows = client.list_bases()
    columns = ["id", "name", "arch", "generation", "sha256", "created_at"]
    output.listing(rows, columns, as_json=as_json, title="bases")


@app.command()
def pretrain(
    dataset: Annotated[
        str,
        typer.Option(
            help="The target set (its .npz name): the base gets a head for its classes and "
            "is never pretrained on it."
        ),
    ],
    arch: Annotated[str, typer.Option(help="resnet18, resnet50, flra_resnet18 ...")] = "resnet18",
    stem: Annotated[
        Stem, typer.Option(help="ResNet stem (see `medvec simulate --help`).")
    ] = Stem.imagenet,
    steps: Annotated[int, typer.Option(min=1, help="Pretraining optimiser steps.")] = (
        PRETRAIN_STEPS
    ),
    sources: Annotated[
        str,
        typer.Option(help="Comma list of pretraining sets (the target is always left out)."),
    ] = ",".join(PRETRAIN_SOURCES),
    max_samples: Annotated[
        int | None, typer.Option(min=1, help="Cap on images per pretraining set.")
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="Import this torchvision checkpoint instead."
        ),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="The cache folder for pretrained bases (default: the user cache, "
            "shared with medvec demo; MEDVEC_CACHE_DIR moves it).",
        ),
    ] = None,
    datasets_dir: Annotated[
        Path | None,
        typer.Option("--datasets-dir", help="Folder of MedMNIST .npz files (MEDVEC_DATASETS_DIR)."),
    ] = None,
    device: DeviceOpt = None,
    seed: int = 0,
    as_json: JsonOpt = False,
) -> None:
    """Pretrain a shared base on other MedMNIST sets and re-head it for a target; cached.

    Runs once per setting: a second call with the same settings returns the cached file
    at once. Register the result with `medvec admin register-base`.

    Example: medvec base pretrain --dataset bloodmnist
    Example: medvec base pretrain --dataset pneumoniamnist --stem small --steps 20000 --device cuda
    """
    from medvec.data import resolve_datasets_dir
    from medvec.data.download import medmnist_num_classes
    from medvec.models import ModelSpec, read_model_provenance
    from medvec.pretrain import PretrainConfig, ensure_base, pretrain_arch

    folder = resolve_datasets_dir(datasets_dir)
    classes = medmnist_num_classes(dataset, folder)
    spec = ModelSpec(arch=arch, num_classes=classes, in_channels=3, stem=stem.value)
    config = PretrainConfig(
        sources=tuple(part.strip() for part in sources.split(",") if part.strip()),
        arch=pretrain_arch(arch),
        stem=stem.value,
        steps=steps,
        max_samples=max_samples,
        seed=seed,
    ).excluding(dataset)
    with output.progress_steps(transient=as_json) as bar:
        task = bar.add_task("pretrain", total=steps, info=", ".join(config.sources))

        def on_step(step: Any = None, total: int | None = None, **stats: Any) -> None:
            bar.update(task, completed=step, total=total, info=output.stats_text(stats, 3))

        path = ensure_base(
            spec,
            output_dir or pretrained_cache(),
            config=config,
            checkpoint=checkpoint,
            datasets_dir=folder,
            device=device,
            on_step=on_step,
        )
    provenance = read_model_provenance(path)
    if as_json:
        output.print_json({"path": str(path), "spec": spec.model_dump(), **provenance})
        return
    output.success(f"base for {dataset}: {path}")
    output.note(f"register it: medvec admin register-base {path} --name {dataset}-{arch}")
