"""A merge process never imports torch: the engine, every strategy and the running sums
run on numpy over plain file reads (issue 14)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medvec.merging import merge_files

from .test_engine_reference import PARAMS, _world

SCRIPT = """
import json, sys
from pathlib import Path
from medvec.merging import mean_pairwise_cosine, merge_files
from medvec.merging.sums import Share, build_sums, merge_from_sums

root = Path(sys.argv[1])
vectors = sorted(root.glob("v*.safetensors"))
params = json.loads(sys.argv[2])
for strategy, p in params.items():
    merge_files(root / "base.safetensors", vectors, root / f"out-{strategy}.safetensors",
                strategy=strategy, params=p, seed=3)
shares = [Share(v.name, v, 1.0 + i) for i, v in enumerate(vectors)]
build_sums(root / "base.safetensors", shares, root / "sums.safetensors")
base = root / "base.safetensors"
merge_from_sums(base, root / "sums.safetensors", root / "from-sums.safetensors")
cosine = mean_pairwise_cosine(vectors)
print(json.dumps({"torch": "torch" in sys.modules, "cosine": cosine}))
"""


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_merge_process_never_imports_torch(tmp_path: Path, dtype: torch.dtype) -> None:
    base, vectors, _ = _world(tmp_path, dtype)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), json.dumps(PARAMS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["torch"] is False
    assert report["cosine"] is not None
    # what the torch-free process wrote is what this process computes
    for strategy, params in PARAMS.items():
        again = merge_files(
            base, vectors, tmp_path / "again.safetensors", strategy=strategy, params=params, seed=3
        )
        written = load_file(str(tmp_path / f"out-{strategy}.safetensors"))
        for key, value in load_file(str(again.path)).items():
            assert torch.equal(
                value.reshape(-1).view(torch.uint8), written[key].reshape(-1).view(torch.uint8)
            ), key
    assert (tmp_path / "from-sums.safetensors").exists()
