"""``ModelSpec`` and the header keys of MedVec files, importable without torch.

The registry validates uploads on headers alone (docs/architecture.md, "File
formats"), so what a header says must be readable in a process that never loads
torch; building the architecture a spec names lives in ``medvec.models.registry``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
)

__all__ = ["FORMAT_KEY", "MODEL_FORMAT", "PROVENANCE_KEY", "SPEC_KEY", "ModelSpec"]

FORMAT_KEY = "medvec.format"
SPEC_KEY = "medvec.spec"
PROVENANCE_KEY = "medvec.model"
MODEL_FORMAT = "model"


class ModelSpec(BaseModel):
    """What is needed to rebuild a model: architecture name and its config.

    ``stem`` is left out of the serialised spec when it is ``"auto"``, so files
    written before the field existed and files of the default stem read and hash
    the same; builders receive it only when it is set.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    arch: str = Field(min_length=1)
    num_classes: int = Field(ge=1)
    in_channels: int = Field(default=3, ge=1)
    image_size: int = Field(default=28, ge=8)
    stem: Literal["auto", "small", "strided", "imagenet"] = "auto"

    @model_serializer(mode="wrap")
    def _omit_auto_stem(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("stem") == "auto":
            data.pop("stem")
        return data

    def builder_kwargs(self) -> dict[str, Any]:
        """The keyword arguments a registered builder takes (everything but ``arch``)."""
        kwargs: dict[str, Any] = {
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
        }
        if self.stem != "auto":
            kwargs["stem"] = self.stem
        return kwargs
