"""Contribution per hospital of a linear merge: metric(all) - metric(all but hospital k).

The leave-one-out model of member k is built from the running sums minus k's share
(``merge_from_sums(..., without=k)``: it reads the sums, the base and k's vector, not the
N - 1 others), scored by the caller's ``score(model_file)`` (which may recalibrate
BatchNorm first, as the registry does for every version, and evaluates on a validation
split), and compared with the score of the model with everyone. A positive contribution
means the merge is better with the hospital than without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from medvec.merging.sums import Share, merge_from_sums
from medvec.metrics import Metrics

__all__ = ["Contribution", "contribution", "leave_one_out"]


class Contribution(BaseModel):
    """metric(all) - metric(without the member), and the scores it comes from.

    ``sensitivity`` is per class (``None`` where a class has no validation image).
    """

    model_config = ConfigDict(frozen=True)

    member: str
    accuracy: float
    auc_macro: float | None
    sensitivity: list[float | None]
    without: Metrics


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else float(a - b)


def contribution(member: str, everyone: Metrics, without: Metrics) -> Contribution:
    """How much better ``everyone`` scores than ``without`` (the model lacking ``member``)."""
    return Contribution(
        member=member,
        accuracy=float(everyone.accuracy - without.accuracy),
        auc_macro=_difference(everyone.auc_macro, without.auc_macro),
        sensitivity=[
            _difference(a, b)
            for a, b in zip(everyone.sensitivity, without.sensitivity, strict=True)
        ],
        without=without,
    )


def leave_one_out(
    base_path: str | Path,
    sums_path: str | Path,
    members: Sequence[Share],
    score: Callable[[Path], Metrics],
    workdir: str | Path,
    *,
    strategy: str = "weighted_mean",
    params: Mapping[str, Any] | None = None,
    base_sha256: str | None = None,
) -> tuple[Metrics, list[Contribution]]:
    """The score of the merge of every member and each member's contribution.

    One model file at a time is written under ``workdir`` and removed once scored.
    """
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)

    def scored(without: Share | None) -> Metrics:
        out = folder / f"loo-{without.member if without else 'all'}.safetensors"
        try:
            merge_from_sums(
                base_path,
                sums_path,
                out,
                strategy=strategy,
                params=params,
                without=without,
                base_sha256=base_sha256,
            )
            return score(out)
        finally:
            out.unlink(missing_ok=True)

    everyone = scored(None)
    return everyone, [contribution(m.member, everyone, scored(m)) for m in members]
