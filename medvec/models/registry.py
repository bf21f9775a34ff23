"""Architectures by name: ``ModelSpec`` and the registry of keyword-only builders.

A model's config travels with its weights (``medvec.spec`` in every model and
vector file), so ``build_model(spec)`` must rebuild exactly the architecture
that produced a file. Builders therefore take only the spec's fields.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib import import_module
from typing import Any, TypeVar

from pydantic import ValidationError
from torch import nn

from medvec.errors import ModelError
from medvec.models.spec import ModelSpec

__all__ = [
    "ModelBuilder",
    "ModelRegistry",
    "ModelSpec",
    "build_model",
    "default_registry",
    "get_model",
    "list_models",
    "register_model",
]

ModelBuilder = Callable[..., nn.Module]
B = TypeVar("B", bound=ModelBuilder)


class ModelRegistry:
    """Builders by name; registering a name twice is an error, never an override."""

    def __init__(self) -> None:
        self._builders: dict[str, ModelBuilder] = {}

    def register(self, name: str | None = None) -> Callable[[B], B]:
        """Decorator: register a keyword-only builder under ``name`` (default: its own name)."""

        def decorator(builder: B) -> B:
            key = name or builder.__name__
            if key in self._builders:
                raise ModelError(
                    f"model {key!r} is already registered",
                    hint="pick another name; builders are never replaced silently",
                    name=key,
                )
            self._builders[key] = builder
            return builder

        return decorator

    def names(self) -> list[str]:
        return sorted(self._builders)

    def builder(self, name: str) -> ModelBuilder:
        try:
            return self._builders[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            raise ModelError(
                f"unknown model architecture {name!r}",
                hint=f"use one of: {known}",
                name=name,
                known=self.names(),
            ) from None

    def get(self, name: str, **cfg: Any) -> nn.Module:
        """Validate ``cfg`` as a ``ModelSpec`` for ``name`` and build it."""
        builder = self.builder(name)
        try:
            spec = ModelSpec(arch=name, **cfg)
        except ValidationError as exc:
            raise ModelError(
                f"invalid config for model {name!r}: {_first_error(exc)}",
                hint="pass num_classes (>= 1) and optionally in_channels and image_size",
                name=name,
            ) from exc
        return self.build(spec, builder=builder)

    def build(self, spec: ModelSpec, *, builder: ModelBuilder | None = None) -> nn.Module:
        builder = builder or self.builder(spec.arch)
        kwargs = spec.builder_kwargs()
        try:
            inspect.signature(builder).bind(**kwargs)
        except TypeError as exc:
            raise ModelError(
                f"builder of {spec.arch!r} does not accept {sorted(kwargs)}: {exc}",
                hint="registered builders take num_classes, in_channels and image_size",
            ) from exc
        return builder(**kwargs)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "config"
    return f"{where}: {err['msg']}"


_DEFAULT = ModelRegistry()

#: modules whose import registers the built-in architectures in the default registry
BUILTIN_MODULES = ("medvec.models.resnet", "medvec.models.flra")


def default_registry() -> ModelRegistry:
    """The registry that ``medvec.models`` registers its architectures in, with them loaded.

    ``medvec.models`` resolves its names lazily (so that ``ModelSpec`` needs no torch),
    hence the built-in architectures are imported here, on first use, not as a side
    effect of importing the package.
    """
    for module in BUILTIN_MODULES:
        import_module(module)
    return _DEFAULT


def register_model(name: str | None = None) -> Callable[[B], B]:
    """Register a builder in the default registry; raises ``ModelError`` on a duplicate."""
    return _DEFAULT.register(name)


def get_model(name: str, **cfg: Any) -> nn.Module:
    """Build architecture ``name`` with ``num_classes``, ``in_channels``, ``image_size``."""
    return default_registry().get(name, **cfg)


def list_models() -> list[str]:
    """Names of the registered architectures, sorted."""
    return default_registry().names()


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the architecture a ``ModelSpec`` names (as read from a model file)."""
    return default_registry().build(spec)
