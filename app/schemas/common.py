"""Shared pieces of the API's pydantic models."""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

NUL = "\x00"

MAX_INT63 = 2**63 - 1
"""The bound of a byte count: a signed 64-bit BIGINT."""

MAX_JSON_INT = 2**53 - 1
"""The bound of an integer in a JSON body: the largest every JSON reader holds exactly
(a double); a bound past it reads as a float, and larger integers compare equal to it."""


def contains_nul(value: Any) -> bool:
    """Whether a NUL character hides anywhere in ``value`` (strings, keys, nested lists)."""
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(contains_nul(v) for v in value)
    return False


def _not_empty(value: Any) -> Any:
    if value == "":
        raise PydanticCustomError(
            "empty_id",
            "an empty string is not an id: give the id, or leave an optional one out (or "
            "null) for its default",
        )
    return value


Id = Annotated[str, StringConstraints(min_length=1), BeforeValidator(_not_empty)]
"""The id of a row a request names. ``""`` is refused, never read as "no id" (and so as
the field's default: the current base, every benchmark)."""


def _distinct(ids: list[str]) -> list[str]:
    if len(set(ids)) != len(ids):
        raise PydanticCustomError("duplicate_id", "lists a vector twice: name each vector once")
    return ids


VectorIds = Annotated[
    list[Id],
    Field(min_length=1, json_schema_extra={"uniqueItems": True}),
    AfterValidator(_distinct),
]
"""The vectors a merge takes: at least one, each named once."""


class ReadModel(BaseModel):
    """A response model built from an ORM row."""

    model_config = ConfigDict(from_attributes=True)


NO_NUL_PATTERN = r"^[^\x00]*$"
"""The JSON-schema pattern of a request's text: anything but NUL."""


def _declare_no_nul(schema: dict[str, Any]) -> None:
    """Give every plain string property (nullable or not) :data:`NO_NUL_PATTERN`, so the
    OpenAPI document says what the validator refuses."""
    for prop in schema.get("properties", {}).values():
        for option in [prop, *prop.get("anyOf", [])]:
            plain = option.get("type") == "string" and not {"enum", "format"} & option.keys()
            if plain and "pattern" not in option:
                option["pattern"] = NO_NUL_PATTERN


class RequestModel(BaseModel):
    """A request body. PostgreSQL text cannot hold NUL, so no field may carry one:
    refusing it here gives a 422 instead of a database error. Only what the model keeps
    is checked: a property the model does not declare is ignored, NUL or not.

    Fields are as strict as the schema they publish: a boolean is ``StrictBool``, an
    integer :data:`app.jsontypes.JsonInt`, a number ``StrictFloat`` (which still takes a
    JSON integer), an id :data:`Id`; pydantic's lax mode would read ``0`` or ``"yes"`` as
    true, ``"1"`` or ``true`` as 1, ``""`` as an id."""

    model_config = ConfigDict(json_schema_extra=_declare_no_nul)

    @model_validator(mode="after")
    def _no_nul(self) -> Self:
        if contains_nul(self.model_dump()):
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return self
