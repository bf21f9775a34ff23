"""`medvec demo --quick` end to end: registry + worker subprocess, hospitals, real data.

The asynchronous default through the command line; the lockstep schedule and the
asynchronous loop's details are in ``test_demo_async.py``."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MEDVEC = Path(sys.executable).with_name("medvec")


@pytest.mark.slow
def test_quick_demo_runs_asynchronously_and_beats_the_hospitals_alone(
    tmp_path: Path, datasets_dir: Path
) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "MEDVEC_DATASETS_DIR": str(datasets_dir), "MEDVEC_DEBUG": "1"}
    done = subprocess.run(
        [str(MEDVEC), "demo", "--quick", "--output", str(out), "--device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MedVec demo" in done.stdout and "centralized" in done.stdout

    result = json.loads((out / "results.json").read_text())
    settings = result["settings"]
    assert settings["lockstep"] is False and settings["hospitals"] == 5
    locals_ = result["locals"]
    assert locals_ and all(r["vector_status"] == "validated" for r in locals_), locals_
    roles = {name: pace["role"] for name, pace in result["paces"].items()}
    assert sorted(r for r in roles.values() if r) == ["late joiner", "straggler"]
    checks = result["checks"]
    (straggler,) = [name for name, role in roles.items() if role == "straggler"]
    # asynchronous: the registry made a version before the straggler's first push
    assert checks["first_version_s"] < checks["hospitals"][straggler]["first_push_s"], checks
    assert result["summary"]["images_trained"] >= result["budget_images"]

    # every promotion by the registry's gate, each starting a generation the hospitals
    # pulled from their next job on
    production = result["production"]
    assert production and all(p["by"] == "system:auto-promote" for p in production)
    assert [p["version_id"] for p in production] == result["promoted"]
    assert max(r["generation"] for r in locals_) >= 2
    by_id = {v["version_id"]: v for v in result["versions"]}
    summary = result["summary"]
    assert summary["promoted_version"] == result["promoted"][-1]
    assert by_id[summary["promoted_version"]]["status"] == "production"
    assert all(v["val_metrics"] and v["metrics"] for v in result["versions"])
    # the point of MedVec: the promoted model is well above the mean hospital trained
    # alone with the same epochs
    assert len(result["alone"]) == settings["hospitals"]
    assert summary["gain_over_alone"] >= 10.0, summary

    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    models = [row["model"] for row in rows]
    assert any(m.startswith("merged: ") for m in models)
    assert "centralized (union)" in models and "mean of hospitals alone" in models
    assert all(row["val_accuracy"] for row in rows if row["model"].startswith("merged: "))
    png = (out / "accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
