"""Lazily resolved package names: importing the core packages loads no torch, a name
resolves from its module on first use, and an unknown name is an AttributeError."""

from __future__ import annotations

import subprocess
import sys

import pytest

import medvec
import medvec.secure


def test_the_core_packages_import_without_torch_and_resolve_on_use() -> None:
    script = (
        "import sys, medvec, medvec.models, medvec.vectors, medvec.secure\n"
        "assert 'torch' not in sys.modules, 'torch imported by a package'\n"
        "from medvec.secure import sum_shares\n"
        "from medvec.models import resnet18\n"
        "assert 'torch' in sys.modules\n"
        "print(sum_shares.__module__, resnet18.__module__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["medvec.secure.shares", "medvec.models.resnet"]


def test_an_unknown_name_is_an_attribute_error_and_dir_lists_the_public_names() -> None:
    with pytest.raises(AttributeError, match="module 'medvec.secure' has no attribute 'nope'"):
        _ = medvec.secure.nope
    assert "merge_files" in dir(medvec) and "sum_shares" in dir(medvec.secure)
