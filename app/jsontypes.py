"""JSON types shared by the registry's and the share holder's request bodies."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

__all__ = ["JsonInt"]


def _json_integer(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError(
            "json_integer", "must be a JSON integer, not {kind}", {"kind": type(value).__name__}
        )
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
"""An integer as JSON Schema means it: ``10`` or ``10.0``, never ``"10"`` or ``true``
(which pydantic's lax mode reads as 10 and 1; its strict mode refuses ``10.0``, which the
published schema allows)."""
