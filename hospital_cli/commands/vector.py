"""``medvec vector create | inspect | validate``: data vectors offline, no registry needed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hospital_cli import output
from hospital_cli.errors import EXIT_REJECTED, CliError
from hospital_cli.options import JsonOpt

app = typer.Typer(help="Create, inspect and validate data vectors (offline).", no_args_is_help=True)

BaseOpt = Annotated[
    Path,
    typer.Option("--base", exists=True, dir_okay=False, help="The base model file (.safetensors)."),
]
VectorArg = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, help="A data vector (.safetensors).")
]


def parse_meta(pairs: list[str]) -> dict[str, str]:
    """``["site=north", "scanner=GE"]`` -> ``{"site": "north", "scanner": "GE"}``."""
    extra: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--meta {pair!r} is not key=value", hint="e.g. --meta site=north")
        extra[key.strip()] = value
    return extra


@app.command("create")
def create(
    base: BaseOpt,
    finetuned: Annotated[
        Path,
        typer.Option("--finetuned", exists=True, dir_okay=False, help="The fine-tuned model file."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the vector.")],
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="Extra key=value metadata (repeatable).")
    ] = None,
    hospital: Annotated[str, typer.Option(help="Hospital name recorded in the vector.")] = "local",
    num_samples: Annotated[
        int, typer.Option("--num-samples", min=1, help="Training samples behind the vector.")
    ] = 1,
    base_id: Annotated[
        str | None, typer.Option("--base-id", help="Registry id of the base (default: sha256).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compute fine-tuned minus base over the floating-point tensors and save it.

    Example: medvec vector create --base base.safetensors --finetuned tuned.safetensors
    -o v.safetensors --hospital st-mary --num-samples 1200 --meta site=north
    """
    from medvec.hashing import sha256_file
    from medvec.models import load_model_file
    from medvec.vectors import VectorMetadata, compute_vector, save_vector, summarize_vector

    extra = parse_meta(meta or [])
    base_model, spec = load_model_file(base)
    tuned_model, tuned_spec = load_model_file(finetuned)
    if tuned_spec != spec:
        raise CliError(
            f"{finetuned.name} is a {tuned_spec.model_dump_json()} model, the base is "
            f"{spec.model_dump_json()}",
            hint="fine-tune the given base, or pass the base the model came from",
        )
    sha = sha256_file(base)
    tensors = compute_vector(base_model.state_dict(), tuned_model.state_dict())
    metadata = VectorMetadata(
        base_id=base_id or sha,
        base_sha256=sha,
        hospital=hospital,
        num_samples=num_samples,
        spec=spec,
        training={"finetuned_file": finetuned.name},
        extra=extra,
    )
    save_vector(out, tensors, metadata)
    summary = summarize_vector(out)
    if as_json:
        output.print_json({"path": str(out), **summary.model_dump(mode="json")})
        return
    output.success(
        f"wrote {out} ({summary.num_tensors} tensors, L2 norm {summary.l2_norm:.6g}) "
        f"against base {sha[:12]}…"
    )


@app.command("inspect")
def inspect(vector: VectorArg, as_json: JsonOpt = False) -> None:
    """Show a vector's metadata, tensor count and L2 norm.

    Example: medvec vector inspect v.safetensors --json
    """
    from medvec.vectors import summarize_vector

    summary = summarize_vector(vector)
    if as_json:
        output.print_json(summary.model_dump(mode="json"))
        return
    meta = summary.metadata
    fields: dict[str, Any] = {
        "hospital": meta.hospital,
        "base_id": meta.base_id,
        "base_sha256": meta.base_sha256,
        "architecture": meta.spec.model_dump() if meta.spec else None,
        "num_samples": meta.num_samples,
        "label_histogram": meta.label_histogram,
        "created_at": meta.created_at,
        "tensors": summary.num_tensors,
        "parameters": summary.num_parameters,
        "l2_norm": summary.l2_norm,
        "max_abs": summary.max_abs,
        "non_finite": summary.non_finite,
        "training": meta.training,
        "privacy": meta.privacy,
        "extra": meta.extra,
    }
    output.key_values(fields, title=vector.name)
    if summary.non_finite:
        output.warn(f"{summary.non_finite} NaN or infinite values: this vector will be rejected")


@app.command("validate")
def validate(
    vector: VectorArg,
    base: BaseOpt,
    max_norm: Annotated[
        float | None, typer.Option("--max-norm", min=0.0, help="Refuse an L2 norm above this.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a vector against a base as the registry does; exit 0 when valid.

    Checks the header, format, base sha256, tensor names, shapes, dtypes, finite
    values and the optional norm bound. An invalid vector exits with code 6 and
    the reason.

    Example: medvec vector validate --base base.safetensors v.safetensors --max-norm 50
    """
    from medvec.errors import IncompatibleBaseError, VectorValidationError
    from medvec.vectors import validate_vector

    try:
        report = validate_vector(vector, base, max_norm=max_norm)
    except (VectorValidationError, IncompatibleBaseError) as exc:
        if as_json:
            output.print_json(
                {"valid": False, "code": exc.code, "message": str(exc), "detail": exc.detail}
            )
        else:
            output.error(f"invalid vector ({exc.code}): {exc}")
        raise typer.Exit(EXIT_REJECTED) from None
    if as_json:
        output.print_json({"valid": True, **report.model_dump(mode="json")})
        return
    output.success(
        f"{vector.name} is valid: {report.num_tensors} tensors, "
        f"{report.num_parameters} parameters, L2 norm {report.l2_norm:.6g}"
    )
