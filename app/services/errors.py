"""The registry's domain errors: what went wrong with a request, in the rules' own terms.

Services (and the workers that call them) raise these; they know nothing of HTTP.
``app.errors`` maps each class to a status code and renders the one error body
``{code, message, detail}``. ``message`` says what is wrong; ``hint`` how to fix it.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a service raises on purpose."""

    code = "bad_request"

    def __init__(self, message: str, *, hint: str | None = None, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail or None

    @property
    def text(self) -> str:
        """The message with its hint, as one line."""
        return f"{self.message} — {self.hint}" if self.hint else self.message


class Unauthenticated(DomainError):
    code = "unauthenticated"


class Forbidden(DomainError):
    code = "forbidden"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class OffsetMismatch(Conflict):
    code = "offset_mismatch"


class Gone(DomainError):
    code = "gone"


class PayloadTooLarge(DomainError):
    code = "payload_too_large"


class InvalidInput(DomainError):
    code = "invalid_input"


class EmptyPart(InvalidInput):
    code = "empty_part"


class PartTooSmall(InvalidInput):
    """A part under the blob store's minimum that does not end the file (S3's rule)."""

    code = "part_too_small"


class ShaMismatch(InvalidInput):
    code = "sha256_mismatch"


class UnknownBase(InvalidInput):
    code = "unknown_base"


class HospitalMismatch(InvalidInput):
    code = "hospital_mismatch"


class BaseRejected(InvalidInput):
    """The base failed the worker's architecture check: it never takes vectors or merges."""

    code = "base_rejected"


class PreconditionFailed(DomainError):
    """The action is valid in general but not for this object's state (e.g. no evaluation)."""

    code = "precondition_failed"


class GateFailed(Conflict):
    """A candidate is worse than production (or below a floor) on the promotion gate;
    ``detail.checks`` lists every comparison with its numbers."""

    code = "gate_failed"


class BaseNotReady(PreconditionFailed):
    """The base is still being verified by a worker; the same request later will pass."""

    code = "base_not_ready"
