"""Diagnose a merge collapse: prediction histogram, BN recalibration, local-to-merge paths.

N hospitals fine-tune one shared base on IID parts of a MedMNIST set; their
weighted-mean merge is measured (``medvec.simulation.diagnose``):

(a) the merged model's prediction histogram on the test split beside the label
    histogram and the majority-class rate;
(b) its test accuracy with the averaged BatchNorm statistics and recalibrated on
    the validation images;
(c) test accuracy at t = 0, 0.25, 0.5, 0.75, 1 on the line from each local model
    (t = 0) to the merge (t = 1), without and with recalibration at each point.

The base is pretrained on the other MedMNIST sets and cached (``--cache-dir``).

    python benchmarks/diagnose_merge.py --arch resnet50 --hospitals 5 --max-train 1500
    python benchmarks/diagnose_merge.py --arch resnet50 --image-size 224 --device cuda
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from medvec.data.download import medmnist_num_classes
from medvec.pretrain import PretrainConfig
from medvec.simulation import SweepConfig
from medvec.simulation.diagnose import DiagnosisConfig, diagnose_merge
from medvec.simulation.sweep import sweep_base


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--hospitals", type=int, default=5)
    parser.add_argument("--max-train", type=int, default=1500, help="split across hospitals")
    parser.add_argument("--max-val", type=int, default=500, help="calibration images")
    parser.add_argument("--max-test", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="local steps instead of epochs")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--stem", default="imagenet")
    parser.add_argument("--pretrain-steps", type=int, default=500)
    parser.add_argument("--pretrain-samples", type=int, default=None, help="cap per set")
    parser.add_argument("--pretrain-batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--datasets-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("diagnosis-output"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="bases; default OUT/cache")
    return parser.parse_args()


def _hist(counts: list[int]) -> str:
    return " ".join(str(c) for c in counts)


def render(report: dict[str, Any]) -> str:
    """The report as Markdown: (a) and (b) in one table, (c) one row per local model."""
    merged, recal = report["merged"], report["merged_recalibrated"]
    lines = [
        f"{report['arch']} at {report['image_size']} px ({report['stem']} stem), "
        f"{report['config']['dataset']}, N = {report['config']['hospitals']}, "
        f"{report['test_images']} test images",
        "",
        "| model | test accuracy | predicted per class |",
        "| --- | ---: | --- |",
        f"| test labels (majority rate {report['majority_rate']:.3f}) | | "
        f"{_hist(report['label_histogram'])} |",
        f"| merged, averaged BN statistics | {merged['accuracy']:.3f} | "
        f"{_hist(merged['predicted'])} |",
        f"| merged, BN recalibrated | {recal['accuracy']:.3f} | {_hist(recal['predicted'])} |",
    ]
    for local in report["locals"]:
        lines.append(
            f"| local {local['hospital']} | {local['accuracy']:.3f} | {_hist(local['predicted'])} |"
        )
    points = [p["t"] for p in report["locals"][0]["path"]]
    lines += [
        "",
        "Local model (t = 0) to merge (t = 1), test accuracy: averaged statistics / recalibrated",
        "",
        "| hospital | " + " | ".join(f"t = {t:g}" for t in points) + " |",
        "| --- |" + " ---: |" * len(points),
    ]
    for local in report["locals"]:
        cells = [f"{p['accuracy']:.3f} / {p['accuracy_recalibrated']:.3f}" for p in local["path"]]
        lines.append(f"| {local['hospital']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    config = DiagnosisConfig(
        dataset=args.dataset,
        hospitals=args.hospitals,
        max_train=args.max_train,
        max_val=args.max_val,
        max_test=args.max_test,
        epochs=args.epochs,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    sweep = SweepConfig(
        datasets=(args.dataset,),
        archs=(args.arch,),
        image_size=args.image_size,
        stem=args.stem,
        pretrain=PretrainConfig(
            steps=args.pretrain_steps,
            max_samples=args.pretrain_samples,
            batch_size=args.pretrain_batch_size,
        ),
    )
    started = time.perf_counter()

    def on_event(name: str, info: dict[str, Any]) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {name}: {info}", flush=True)

    num_classes = medmnist_num_classes(args.dataset, args.datasets_dir)
    on_event("base", {"arch": args.arch, "pretrain_steps": args.pretrain_steps})
    base = sweep_base(
        sweep,
        args.dataset,
        args.arch,
        num_classes,
        args.cache_dir or args.out / "cache",
        datasets_dir=args.datasets_dir,
        device=args.device,
    )
    report = diagnose_merge(
        config, base, datasets_dir=args.datasets_dir, device=args.device, on_event=on_event
    )
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{args.dataset}-{args.arch}-s{args.image_size}-n{args.hospitals}"
    text = render(report) + f"\n\nwall time {report['seconds']:.0f} s\n"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1))
    (args.out / f"{name}.md").write_text(text)
    print(f"\n{text}")


if __name__ == "__main__":
    main()
