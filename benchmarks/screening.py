"""Benchmark: merged accuracy with and without screening, on real BloodMNIST hospitals.

Builds the scenario of ``medvec.simulation.poisoning`` (a ResNet-10 base pretrained on
a public slice of BloodMNIST; honest hospitals fine-tuning on their own slices; one
label-flipping hospital, one update boosted x50, one random-noise vector, one hospital
trained on OrganAMNIST relabelled into BloodMNIST's classes). Vectors are screened in
push order, as the registry does: each against the vectors accepted before it that
were not quarantined, with the registry's default policy. Then the weighted mean of
every vector (no screening) and of the vectors screening kept are built, their
BatchNorm statistics recomputed on the validation images, and both measured on the
test split, next to the base and the honest-only merge.

    MEDVEC_DATASETS_DIR=... python benchmarks/screening.py --honest 4 --test-images 2000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch
from torch.utils.data import Subset

from medvec.calibration import recalibrate_bn
from medvec.evaluation import evaluate_model
from medvec.merging import merge_state_dicts
from medvec.models import load_model_file
from medvec.screening import (
    ScreeningPolicy,
    ScreeningStats,
    cosine_to_mean,
    layer_norms,
    measure_vector,
    outlier_reasons,
)
from medvec.simulation.poisoning import build_scenario, target_split, vector_tensors


def _screen(
    order: list[str], paths: dict[str, Path], base: Path, val: Subset, policy: ScreeningPolicy
) -> dict[str, list[str]]:
    """Each vector's reasons, screened against the earlier ones screening kept; prints
    its statistics."""
    kept: list[str] = []
    verdicts: dict[str, list[str]] = {}
    print("vector       norm/median cosine  val_acc base_acc")
    for name in order:
        norms = layer_norms(paths[name])
        norm = sum(v * v for v in norms.values()) ** 0.5
        peers = [paths[p] for p in kept]
        peer_norms = [sum(v * v for v in layer_norms(p).values()) ** 0.5 for p in peers]
        measured, base_measured = measure_vector(base, paths[name], val)
        stats = ScreeningStats(
            norm=norm, layer_norms=norms, peers=len(peers),
            median_peer_norm=statistics.median(peer_norms) if peer_norms else None,
            cosine_to_peers=cosine_to_mean(paths[name], peers),
            val=measured, base_val=base_measured,
        )  # fmt: skip
        verdicts[name] = outlier_reasons(stats, policy)
        ratio = norm / stats.median_peer_norm if stats.median_peer_norm else float("nan")
        cosine = stats.cosine_to_peers if stats.cosine_to_peers is not None else float("nan")
        print(f"{name:12s} {ratio:11.2f} {cosine:6.3f} {measured.accuracy:8.3f} "
              f"{base_measured.accuracy:8.3f}")  # fmt: skip
        if not verdicts[name]:
            kept.append(name)
    return verdicts


def _merged_accuracy(base: Path, vectors: list[Path], samples: list[int], val: Subset,
                     test: object) -> float:  # fmt: skip
    model, _spec = load_model_file(base)
    merged = merge_state_dicts(
        model.state_dict(), [vector_tensors(p) for p in vectors],
        strategy="weighted_mean", num_samples=samples,
    )  # fmt: skip
    model.load_state_dict(merged)
    recalibrate_bn(model, val, device="cpu")
    return float(evaluate_model(model, test, device="cpu").accuracy)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--honest", type=int, default=4)
    parser.add_argument("--per-hospital", type=int, default=192)
    parser.add_argument("--val-images", type=int, default=300)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    datasets = Path(os.environ.get("MEDVEC_DATASETS_DIR", "datasets"))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with tempfile.TemporaryDirectory() as folder:
        scenario = build_scenario(
            datasets, Path(folder), honest=args.honest, per_hospital=args.per_hospital,
            seed=args.seed,
        )  # fmt: skip
        val = Subset(target_split(datasets, "val"), range(args.val_images))
        test = Subset(target_split(datasets, "test"), range(args.test_images))
        paths = scenario.vectors
        order = list(scenario.honest) + list(scenario.poisoned)
        verdicts = _screen(order, paths, scenario.base_path, val, ScreeningPolicy())
        for name in order:
            print(f"{name:12s} {'QUARANTINED' if verdicts[name] else 'kept'}: "
                  f"{'; '.join(verdicts[name])}")  # fmt: skip

        def accuracy(names: list[str]) -> float:
            samples = [scenario.num_samples[n] for n in names]
            return _merged_accuracy(
                scenario.base_path, [paths[n] for n in names], samples, val, test
            )

        base_model, _ = load_model_file(scenario.base_path)
        base_accuracy = evaluate_model(base_model, test, device="cpu").accuracy
        print(f"base                          test accuracy {base_accuracy:.4f}")
        print(f"honest only                   test accuracy {accuracy(list(scenario.honest)):.4f}")
        print(f"merged without screening      test accuracy {accuracy(order):.4f}")
        kept = [n for n in order if not verdicts[n]]
        with_screening = accuracy(kept)
        label = f"merged with screening ({len(kept)} of {len(order)})"
        print(f"{label:29s} test accuracy {with_screening:.4f}")


if __name__ == "__main__":
    main()
