"""``medvec predict``: class and confidence for each image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hospital_cli import output
from hospital_cli.inference import predict_files
from hospital_cli.options import DeviceOpt, JsonOpt, ModelOpt

app = typer.Typer()


@app.command()
def predict(
    model: ModelOpt,
    images: Annotated[
        list[Path], typer.Argument(exists=True, dir_okay=False, help="PNG/JPEG or DICOM files.")
    ],
    labels: Annotated[
        str | None, typer.Option(help="Class names, comma-separated, in class-index order.")
    ] = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict the class of each image, with the model's confidence.

    Example: medvec predict --model current.safetensors a.png b.dcm --labels normal,pneumonia
    """
    names = [n.strip() for n in labels.split(",")] if labels else None
    rows = predict_files(model, images, device=device)
    for row in rows:
        index = int(row["class_index"])
        row["class"] = names[index] if names and index < len(names) else str(index)
    output.listing(rows, ["image", "class", "confidence"], as_json=as_json, title="predictions")
