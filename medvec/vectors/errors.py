"""One error class per way a data vector (or a safetensors file) can be wrong.

Each class keeps ``VectorValidationError`` (or ``IncompatibleBaseError``) as its
parent, so callers that only care "is it valid" catch the parent, while the
registry can report the precise ``code`` of the failure.
"""

from __future__ import annotations

from medvec.errors import IncompatibleBaseError, VectorValidationError

__all__ = [
    "BaseMismatchError",
    "HeaderTooLargeError",
    "MalformedFileError",
    "NonFiniteError",
    "NormBoundError",
    "NotAVectorError",
    "VectorDtypeError",
    "VectorKeysError",
    "VectorShapeError",
]


class MalformedFileError(VectorValidationError):
    """Not a well-formed safetensors file: truncated, bad JSON, offsets out of range."""

    code = "vector_malformed"


class HeaderTooLargeError(VectorValidationError):
    """The safetensors header is larger than the configured bound."""

    code = "vector_header_too_large"


class NotAVectorError(VectorValidationError):
    """A safetensors file whose ``medvec.format`` is not ``vector`` or whose metadata is bad."""

    code = "vector_wrong_format"


class VectorKeysError(VectorValidationError):
    """Tensor names differ from the base's floating-point tensors."""

    code = "vector_keys_mismatch"


class VectorShapeError(VectorValidationError):
    """A tensor's shape differs from the base's."""

    code = "vector_shape_mismatch"


class VectorDtypeError(VectorValidationError):
    """A tensor's dtype differs from the base's."""

    code = "vector_dtype_mismatch"


class NonFiniteError(VectorValidationError):
    """A tensor holds NaN or infinite values."""

    code = "vector_non_finite"


class NormBoundError(VectorValidationError):
    """The vector's global L2 norm exceeds the configured bound."""

    code = "vector_norm_exceeded"


class BaseMismatchError(IncompatibleBaseError):
    """The vector names a base (sha256 or spec) other than the one given."""

    code = "incompatible_base"
