"""Model cards: ``GET /versions/{id}/card`` in Markdown, from the registry's records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.models import Evaluation, EvaluationStatus
from tests.api.conftest import Hospital, Registry, make_hospital
from tests.api.factories import ModelKit, tuned_metrics
from tests.api.helpers import push
from tests.api.test_privacy import dp_sgd
from tests.api.test_versions import evaluate, make_version, no_production  # noqa: F401


def card_of(registry: Registry, version_id: str, token: str) -> Any:
    with registry.client(token) as client:
        return client.get(f"/versions/{version_id}/card")


def test_the_card_tells_use_data_merge_metrics_privacy_lineage_and_limits(
    registry: Registry,
    base: dict[str, Any],
    kit: ModelKit,
    hospital: Hospital,
    datasets_dir: Path,
) -> None:
    other = make_hospital(registry, "card")
    vector_ids = []
    for who, privacy in ((hospital, dp_sgd(1.1, 0.02, 300)), (other, {})):
        histogram = {"0": 20, "1": 44}
        path = kit.vector(who.name, scale=1.1, privacy=privacy, label_histogram=histogram)
        with registry.client(who.token) as client:
            response = push(client, path)
            assert response.status_code == 201, response.text
            vector_ids.append(response.json()["id"])
    version = make_version(registry, kit, base, {vector_ids[0]: 0.5, vector_ids[1]: 0.5})
    evaluate(registry, version["id"], EvaluationStatus.COMPLETED)
    metrics = tuned_metrics(kit, datasets_dir)
    with registry.session() as session, session.begin():
        row = session.scalar(select(Evaluation).where(Evaluation.version_id == version["id"]))
        assert row is not None
        row.metrics = metrics

    response = card_of(registry, version["id"], registry.admin_token)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/markdown")
    card = response.text
    for section in (
        "## Intended use",
        "## Training data: hospitals and samples",
        "## Merge",
        "## Metrics",
        "## Privacy budget spent",
        "## Lineage",
        "## Known limitations",
    ):
        assert section in card
    assert hospital.name in card and other.name in card
    assert "0: 20, 1: 44" in card
    assert "128 training images" in card
    assert "Strategy **weighted_mean**" in card
    low, high = metrics["intervals"]["accuracy"]
    assert f"| accuracy | {metrics['accuracy']:.3f} | [{low:.3f}, {high:.3f}] |" in card
    sens_low, sens_high = metrics["intervals"]["sensitivity"][1]
    assert f"[{sens_low:.3f}, {sens_high:.3f}]" in card
    assert "Calibration (reliability curve" in card
    assert "DP-SGD: epsilon" in card and "unbounded" in card
    assert "Some inputs carry no differential-privacy guarantee" in card
    assert f"base **{base['name']}**" in card

    with registry.client(hospital.token) as client:
        assert client.get(f"/versions/{version['id']}/card").status_code == 404
    with registry.admin() as admin:
        promoted = admin.post(f"/versions/{version['id']}/promote", json={"stage": "production"})
        assert promoted.status_code == 200, promoted.text
    seen = card_of(registry, "production", hospital.token)
    assert seen.status_code == 200
    assert hospital.name not in seen.text and other.name not in seen.text
    assert "your hospital" in seen.text and "hospital 1" in seen.text
    assert vector_ids[1][:8] not in seen.text
    assert "0: 20, 1: 44" in seen.text
