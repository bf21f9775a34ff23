"""Shared pieces of the API's pydantic models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ReadModel(BaseModel):
    """A response model built from an ORM row."""

    model_config = ConfigDict(from_attributes=True)
