"""``medvec eval``: the full metric set of a model on a labelled local dataset."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hospital_cli import output
from hospital_cli.inference import evaluate_file
from hospital_cli.options import BatchOpt, DataOpt, DeviceOpt, JsonOpt, ModelOpt

app = typer.Typer()

SCALARS = ["n", "accuracy", "balanced_accuracy", "auc_macro", "f1_macro", "ece"]


@app.command("eval")
def evaluate(
    model: ModelOpt,
    data: DataOpt,
    split: Annotated[
        str, typer.Option(help="Split of a MedMNIST .npz: train, val, test.")
    ] = "test",
    batch_size: BatchOpt = 256,
    max_samples: Annotated[int | None, typer.Option(min=1, help="First N samples only.")] = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a model file on labelled data and print the full metric set.

    Accuracy, balanced accuracy, macro AUC and F1, per-class sensitivity and
    specificity, the confusion matrix and calibration (ECE).

    Example: medvec eval --model current.safetensors --data pneumoniamnist.npz --split test
    """
    metrics = evaluate_file(
        model, data, split=split, batch_size=batch_size, device=device, max_samples=max_samples
    )
    if as_json:
        output.print_json(metrics)
        return
    render_metrics(metrics)


def render_metrics(metrics: dict[str, Any]) -> None:
    output.key_values({k: metrics.get(k) for k in SCALARS if k in metrics}, title="metrics")
    sens, spec = metrics.get("sensitivity") or [], metrics.get("specificity") or []
    rows = [
        {"class": str(i), "sensitivity": s, "specificity": p}
        for i, (s, p) in enumerate(zip(sens, spec, strict=False))
    ]
    if rows:
        output.table(rows, ["class", "sensitivity", "specificity"], title="per class")
    matrix = metrics.get("confusion_matrix") or []
    if matrix:
        columns = ["true \\ pred", *(str(i) for i in range(len(matrix)))]
        grid = [
            {columns[0]: str(i), **{str(j): v for j, v in enumerate(r)}}
            for i, r in enumerate(matrix)
        ]
        output.table(grid, columns, title="confusion matrix")
