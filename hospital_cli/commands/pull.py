"""``medvec pull``: download a model version, verify its sha256, rename it into place;
with ``--format onnx`` also export it to ONNX."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from hospital_cli import output
from hospital_cli.downloads import download_verified
from hospital_cli.errors import CliError
from hospital_cli.options import JsonOpt, ProfileOpt, ServerOpt, TokenOpt, make_client

app = typer.Typer()


class ModelFormat(enum.StrEnum):
    SAFETENSORS = "safetensors"
    ONNX = "onnx"


def export_pulled(model_file: Path, target: Path) -> Path:
    """The pulled model file (the merged weights with their spec) as ONNX at ``target``."""
    from medvec.models import load_model_file, read_model_provenance
    from medvec.models.export import export_onnx

    model, spec = load_model_file(model_file)
    return export_onnx(model, spec, target, provenance=read_model_provenance(model_file))


def card_path(model_file: Path) -> Path:
    """Where the model card goes: ``<name>.card.md`` beside the model file."""
    return model_file.with_name(f"{model_file.stem}.card.md")


def save_card(text: str, model_file: Path) -> Path:
    """Write the card beside the model (through a temporary name, renamed into place)."""
    path = card_path(model_file)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    return path


def _targets(record_id: str, out: Path | None, fmt: ModelFormat) -> tuple[Path, Path | None]:
    """(where the verified safetensors goes, where the ONNX export goes or None)."""
    if fmt is ModelFormat.SAFETENSORS:
        return out or Path(f"{record_id}.safetensors"), None
    onnx_path = out or Path(f"{record_id}.onnx")
    return onnx_path.with_suffix(".safetensors"), onnx_path


@app.command()
def pull(
    version: Annotated[
        str | None, typer.Option("--version", "-v", help="Version id (admins: any version).")
    ] = None,
    production: Annotated[
        bool, typer.Option("--production", help="The production model (the default).")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Destination file (default: <id>.safetensors or <id>.onnx)."
        ),
    ] = None,
    fmt: Annotated[
        ModelFormat,
        typer.Option(
            "--format",
            "-f",
            help="safetensors (PyTorch, `medvec predict`) or onnx: also export the "
            "verified weights to ONNX at --out, keeping the .safetensors beside it.",
        ),
    ] = ModelFormat.SAFETENSORS,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a model version (production by default) and verify its sha256.

    Examples: medvec pull --production -o models/current.safetensors;
    medvec pull --format onnx -o models/current.onnx
    """
    if version and production:
        raise CliError("give either --version or --production, not both")
    version_id = version or "production"
    with make_client(profile, server, token) as client:
        record = client.get_version(version_id)
        target, onnx_target = _targets(str(record["id"]), out, fmt)
        with output.progress_bytes(transient=True) as bar:
            task = bar.add_task(f"pull {record['id']}", total=None)
            sha256 = download_verified(
                client,
                f"/versions/{version_id}/download",
                target,
                expected_sha256=record.get("sha256"),
                on_total=lambda total: bar.update(task, total=total),
                on_bytes=lambda n: bar.advance(task, n),
            )
        card = save_card(client.model_card(str(record["id"])), target)
    if onnx_target is not None:
        output.note(f"exporting {record['id']} to ONNX (this takes a while) ...")
        export_pulled(target, onnx_target)
    if as_json:
        result: dict[str, object] = {
            "version": record,
            "path": str(target),
            "sha256": sha256,
            "card_path": str(card),
        }
        if onnx_target is not None:
            result["onnx_path"] = str(onnx_target)
        output.print_json(result)
        return
    exported = f", exported to {onnx_target}" if onnx_target is not None else ""
    output.success(
        f"version {record['id']} ({record.get('status', '')}) → {target}, sha256 verified"
        + exported
        + f"; model card → {card}"
    )
