"""Pushing scaled copies of the kit's vector and screening them as the worker does, with
the norm rule only: the session's other vectors differ from the kit's in scale alone, so
the cosine and accuracy rules would judge the tests' ordering, not the vector."""

from __future__ import annotations

from typing import Any

from app.config import Environment
from app.db import make_sessionmaker
from tests.api.conftest import Hospital, Registry
from tests.api.factories import ModelKit
from tests.api.helpers import push
from worker.config import WorkerSettings
from worker.evaluate import Evaluator
from worker.screen import screen_vector

SCREENING_IMAGES = 64
"""validation images per screening: the norm rule reads none, and fewer keep tests fast"""


def push_scaled(
    registry: Registry, kit: ModelKit, hospital: Hospital, scale: float
) -> dict[str, Any]:
    with registry.client(hospital.token) as client:
        response = push(client, kit.vector(hospital.name, scale=scale))
    assert response.status_code == 201, response.text
    return dict(response.json())


def screen(registry: Registry, vector_id: str) -> dict[str, Any]:
    """Screen ``vector_id`` (norm rule only); the vector as the API shows it then."""
    settings = registry.settings.model_copy(
        update={
            "screening_min_cosine": None,
            "screening_accuracy_margin": None,
            "screening_max_images": SCREENING_IMAGES,
        }
    )
    evaluator = Evaluator(WorkerSettings(environment=Environment.TEST))
    sessions = make_sessionmaker(registry.engine)
    screen_vector(sessions, registry.store, vector_id, settings, evaluator)
    with registry.admin() as admin:
        return dict(admin.get(f"/vectors/{vector_id}").json())
