"""Package attributes resolved on first use (PEP 562 ``__getattr__`` and ``__dir__``).

The core packages re-export names whose modules import torch; resolving them lazily keeps
``import medvec.errors`` (the CLI's ``medvec login``), the registry's header checks and
the merge worker free of torch until a name that needs it is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, modules: Mapping[str, str], public: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: a name of ``modules`` is read from the
    module it maps to on first use; ``dir()`` lists ``public``."""

    def getattr_(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module), name)

    def dir_() -> list[str]:
        return sorted(public)

    return getattr_, dir_
