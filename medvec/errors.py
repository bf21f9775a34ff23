"""Typed errors of the core library.

Every error says what is wrong (``message``) and how to fix it (``hint``), so the
registry can render it as a 4xx body and the CLI as one line on stderr.
"""

from __future__ import annotations

from typing import Any


class MedVecError(Exception):
    """Base class of every error the core library raises on purpose."""

    code = "medvec_error"

    def __init__(self, message: str, *, hint: str | None = None, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail: dict[str, Any] = detail

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class VectorValidationError(MedVecError):
    """A data vector does not fit its base or breaks a bound (keys, shapes, NaN, norm...)."""

    code = "vector_invalid"


class IncompatibleBaseError(MedVecError):
    """A vector, model or merge input refers to a different base than the one given."""

    code = "incompatible_base"


class MergeError(MedVecError):
    """A merge cannot be carried out with the given inputs or parameters."""

    code = "merge_invalid"


class ModelError(MedVecError):
    """An architecture name, model config or checkpoint is unknown or inconsistent."""

    code = "model_invalid"


class DatasetError(MedVecError):
    """A dataset is missing, malformed or does not match the model."""

    code = "dataset_invalid"


class PrivacyError(MedVecError):
    """Differential-privacy settings are invalid or cannot be accounted."""

    code = "privacy_invalid"


class SecureAggregationError(MedVecError):
    """A share, a share sum or a secure merge is malformed or would leak a single vector."""

    code = "secure_invalid"


class SetTooSmallError(SecureAggregationError):
    """A sum over fewer shares than the share holder's minimum K."""

    code = "set_too_small"


class DifferencingSetError(SecureAggregationError):
    """A sum that, with the sums already released, would reveal one hospital's vector."""

    code = "differencing_set"


class WeightsNotAllowedError(SecureAggregationError):
    """A sum asked with a member weight other than 1: only plain (0/1) sums are released."""

    code = "weights_not_allowed"
