"""Running sums in the registry, on SQLite and PostgreSQL with the live API: the worker keeps
each base's sums as hospitals push, supersede and update vectors, builds linear versions
from them (reading no input vector), and its periodic check agrees with a full recompute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy.orm import sessionmaker

from app.models import BaseModelRecord, DataVector
from app.services.running_sums import wanted_members
from medvec.merging import merge_files
from medvec.models import load_model_file
from tests.api.conftest import Registry, make_hospital
from tests.api.factories import ModelKit
from tests.api.helpers import push
from worker.evaluate import Evaluator
from worker.merge import run_merge
from worker.sums import check_sums, holds, refresh_sums, sums_path

pytestmark = pytest.mark.databases  # SQLite and PostgreSQL


def _members(registry: Registry, base_id: str, weighting: str) -> dict[str, float]:
    with registry.session() as session:
        base = session.get(BaseModelRecord, base_id)
        assert base is not None
        return {m.vector_id: m.weight for m in wanted_members(session, base, weighting)}


def _push(
    registry: Registry, kit: ModelKit, token: str, name: str, scale: float, samples: int
) -> str:
    gen = torch.Generator().manual_seed(int(scale * 1000))
    tensors = {
        k: v * scale + 1e-4 * torch.randn(v.shape, generator=gen) for k, v in kit.tensors.items()
    }
    path = kit.vector(name, tensors=tensors, num_samples=samples)
    with registry.client(token) as client:
        response = push(client, path)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def assert_streaming_merge_equals(
    registry: Registry,
    base: dict[str, Any],
    version_sha256: str,
    members: dict[str, float],
    tmp_path: Path,
) -> None:
    """The stored version equals, to 1e-5 relative per tensor, the streaming engine's
    weighted mean of ``members`` (vector id -> weight) on ``base``."""
    store = registry.store
    with registry.session() as session:
        shas = {v: session.get(DataVector, v).sha256 for v in members}  # type: ignore[union-attr]
    full = merge_files(
        store.local_path(base["sha256"]),
        [store.local_path(shas[v]) for v in members],
        tmp_path / "streaming.safetensors",
        strategy="weighted_mean",
        weights=list(members.values()),
    )
    stored, _ = load_model_file(store.local_path(version_sha256))
    expected, _ = load_model_file(full.path)
    for key, value in expected.state_dict().items():
        got = stored.state_dict()[key]
        if value.is_floating_point() and value.numel():
            scale = float(value.abs().max()) or 1.0
            assert float((got - value).abs().max()) / scale < 1e-5, key


def assert_default_merge_uses_the_sums(
    registry: Registry, base: dict[str, Any], members: dict[str, float], seed: int, tmp_path: Path
) -> None:
    """The default merge of ``base``, run as the worker runs it, is built from the running
    sums over exactly ``members`` (vector id -> weight), and equals the streaming engine's
    merge of every input vector."""
    with registry.admin() as admin:
        accepted = admin.post(
            "/merges", json={"base_id": base["id"], "calibration": "none", "seed": seed}
        )
        assert accepted.status_code == 202, accepted.text
    sessions = sessionmaker(registry.engine, expire_on_commit=False)
    job_id = accepted.json()["job_id"]
    settings = registry.worker_settings(running_sums=True)
    outcome = run_merge(
        sessions, registry.store, job_id, settings, evaluator=lambda: Evaluator(settings)
    )
    assert outcome.version_id is not None
    with registry.admin() as admin:
        version = admin.get(f"/versions/{outcome.version_id}").json()
    assert version["mergeability"]["from_running_sums"] is True
    assert {i["vector_id"]: i["weight"] for i in version["inputs"]} == members
    assert_streaming_merge_equals(registry, base, version["sha256"], members, tmp_path)


def test_sums_follow_pushes_and_build_the_weighted_mean(
    registry: Registry, kit: ModelKit, base: dict[str, Any], tmp_path: Path
) -> None:
    sessions = sessionmaker(registry.engine, expire_on_commit=False)
    store = registry.store
    hospitals = [make_hospital(registry, "sums") for _ in range(3)]
    for index, hospital in enumerate(hospitals):
        _push(registry, kit, hospital.token, hospital.name, 0.5 + index, 40 + 10 * index)
    refresh_sums(sessions, store, base["id"])
    path = sums_path(store, base["id"], "samples")
    assert holds(path, base["sha256"], _members(registry, base["id"], "samples"))

    # hospital 0 pushes again: its old share is subtracted, the new one added
    newest = _push(registry, kit, hospitals[0].token, hospitals[0].name, 3.5, 90)
    assert refresh_sums(sessions, store, base["id"]) == ["samples", "uniform"]
    members = _members(registry, base["id"], "samples")
    assert members[newest] == 90.0 and holds(path, base["sha256"], members)
    assert refresh_sums(sessions, store, base["id"]) == []  # nothing new: nothing done

    assert_default_merge_uses_the_sums(registry, base, members, 11, tmp_path)

    # the periodic check: a full recompute agrees with the running file
    drifts = check_sums(sessions, store, base["id"])
    assert set(drifts) == {"samples", "uniform"}
    assert all(d < 1e-9 for d in drifts.values()), drifts


def test_a_lost_sums_file_is_rebuilt_not_trusted(
    registry: Registry, kit: ModelKit, base: dict[str, Any]
) -> None:
    sessions = sessionmaker(registry.engine, expire_on_commit=False)
    store = registry.store
    hospital = make_hospital(registry, "lost")
    _push(registry, kit, hospital.token, hospital.name, 0.25, 30)
    refresh_sums(sessions, store, base["id"])
    path = sums_path(store, base["id"], "uniform")
    path.write_bytes(b"not a sums file")  # a crash or a disk fault
    other = make_hospital(registry, "lost")
    _push(registry, kit, other.token, other.name, 0.75, 30)
    assert "uniform" in refresh_sums(sessions, store, base["id"])
    assert holds(path, base["sha256"], _members(registry, base["id"], "uniform"))
