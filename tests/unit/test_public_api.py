"""The package-level names resolve to the real objects, and importing the package stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import medvec


@pytest.mark.parametrize("name", [n for n in medvec.__all__ if n != "__version__"])
def test_public_names_resolve_to_their_modules(name: str) -> None:
    obj = getattr(medvec, name)
    assert obj.__name__ == name


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = medvec.nope


@pytest.mark.parametrize(
    "modules",
    [
        "medvec.errors, medvec.hashing",
        "medvec.training_config",  # the CLI reads the recipe's defaults when it starts
        "hospital_cli.main",  # every command registered: `medvec login` stays instant
    ],
)
def test_light_imports_do_not_load_torch(modules: str) -> None:
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
