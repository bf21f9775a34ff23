"""``PrivacyRecord``: the ``privacy`` part of a vector's metadata, what its hospital
declares about the vector's differential privacy.

The registry accounts every record it holds (``medvec.privacy.accountant_history``), on
pages every reader opens; a malformed one (``"dp_noise": "abc"``, a sample rate of 1.5)
would break them all. So the record is typed and checked wherever metadata is read: a
registry refuses a vector or share that carries a malformed one before storing it.
Numbers are strict (``"1.5"`` is not a number, ``1`` is not a boolean), finite, and in
their range; unknown keys are refused; and the keys must fit one another, as the
writers in this package produce them:

* clipping only: ``dp_sgd`` false, ``dp_clip``;
* output noise (``medvec train --dp-noise``): and ``dp_noise``, ``noise_std``, ``delta``,
  ``epsilon``, ``accountant`` "gaussian";
* DP-SGD (``--dp-sgd``): ``dp_sgd`` true, Opacus's accountant ``history`` (older vectors
  ``dp_noise``, ``sample_rate`` and ``steps`` instead), ``epsilon``, ``delta``;
* distributed noise (``medvec push --secure --dp-noise``): ``mechanism``
  "distributed_gaussian", ``dp_clip``, ``dp_noise``, ``secure_k``, ``guarantee``.

A record can be well formed and still untrue: nothing here (nor at the registry) can
check that the declared noise was added (docs/privacy.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, with_config
from typing_extensions import TypedDict

__all__ = ["PrivacyField", "PrivacyRecord"]

Positive = Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
SampleRate = Annotated[float, Strict(), Field(gt=0, le=1, allow_inf_nan=False)]
Steps = Annotated[int, Strict(), Field(ge=0)]


def _three_numbers(entry: Any) -> Any:
    if not isinstance(entry, list | tuple) or len(entry) != 3:
        raise ValueError(
            f"a history entry is [noise multiplier, sample rate, steps], not {entry!r}"
        )
    return entry


HistoryEntry = Annotated[tuple[Positive, SampleRate, Steps], BeforeValidator(_three_numbers)]


@with_config(ConfigDict(extra="forbid"))
class PrivacyRecord(TypedDict, total=False):
    """The keys a vector's ``privacy`` may hold; all optional (``{}``: no privacy)."""

    dp_sgd: Annotated[bool, Strict()]
    dp_clip: Positive
    dp_noise: Positive
    noise_std: NonNegative
    sample_rate: SampleRate
    steps: Steps
    history: list[HistoryEntry]
    epsilon: NonNegative
    delta: Annotated[float, Strict(), Field(gt=0, lt=1, allow_inf_nan=False)]
    accountant: Literal["gaussian", "rdp", "analytic_gaussian"]
    batchnorm: Literal["frozen"]
    mechanism: Literal["distributed_gaussian"]
    secure_k: Annotated[int, Strict(), Field(ge=1)]
    guarantee: Annotated[str, Field(max_length=2000)]


def _consistent(record: PrivacyRecord) -> PrivacyRecord:
    """The keys fit one another, so that the ledger reads the record one way only."""
    if "dp_noise" in record and "dp_clip" not in record:
        raise ValueError("dp_noise is a multiple of the clipping bound: give dp_clip too")
    if record.get("dp_sgd"):
        legacy = all(key in record for key in ("dp_noise", "sample_rate", "steps"))
        if "history" not in record and not legacy:
            raise ValueError(
                "a DP-SGD record needs its accountant's history (or dp_noise, sample_rate "
                "and steps)"
            )
    elif "history" in record:
        raise ValueError("history is DP-SGD's accountant history: set dp_sgd to true")
    if "mechanism" in record and not all(k in record for k in ("dp_noise", "secure_k")):
        raise ValueError("distributed noise needs dp_noise, dp_clip and secure_k")
    return record


PrivacyField = Annotated[PrivacyRecord, AfterValidator(_consistent)]
"""The type of ``VectorMetadata.privacy``: a checked ``PrivacyRecord`` (still a dict)."""
