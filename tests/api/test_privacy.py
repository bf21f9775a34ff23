"""The privacy ledger: each hospital's DP spending over all its vectors, composed by
Opacus' RDP accountant, and the admin's budget that refuses an overspending vector
before anything is stored."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from opacus.accountants import RDPAccountant

from app.models import DataVector, EvaluationStatus
from tests.api.conftest import Hospital, Registry, make_hospital
from tests.api.factories import ModelKit
from tests.api.helpers import error, push
from tests.api.test_versions import evaluate, make_version, no_production  # noqa: F401

DELTA = 1e-5


def dp_sgd(noise: float, rate: float, steps: int) -> dict[str, Any]:
    """What ``medvec train --dp-sgd`` writes into a vector's metadata."""
    from medvec.privacy import dp_sgd_epsilon

    return {
        "dp_sgd": True,
        "dp_clip": 1.0,
        "dp_noise": noise,
        "sample_rate": rate,
        "steps": steps,
        "epsilon": dp_sgd_epsilon(noise, rate, steps, DELTA),
        "delta": DELTA,
        "accountant": "rdp",
        "history": [[noise, rate, steps]],
    }


def opacus_epsilon(history: list[tuple[float, float, int]], delta: float = DELTA) -> float:
    accountant = RDPAccountant()
    accountant.history = history
    return float(accountant.get_epsilon(delta))


def ledger(registry: Registry, hospital: Hospital, token: str | None = None) -> Any:
    with registry.client(token or registry.admin_token) as client:
        return client.get(f"/hospitals/{hospital.id}/privacy")


def test_spending_composes_every_vector_through_the_rdp_accountant(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    first, second = dp_sgd(1.1, 0.02, 300), dp_sgd(0.9, 0.05, 120)
    with registry.client(hospital.token) as client:
        for scale, privacy in ((1.01, first), (1.02, second)):
            response = push(client, kit.vector(hospital.name, scale=scale, privacy=privacy))
            assert response.status_code == 201, response.text
    body = ledger(registry, hospital, hospital.token).json()
    expected = opacus_epsilon([(1.1, 0.02, 300), (0.9, 0.05, 120)])
    assert body["epsilon"] == expected
    assert max(first["epsilon"], second["epsilon"]) < body["epsilon"]
    assert body["epsilon"] < first["epsilon"] + second["epsilon"]  # tighter than adding up
    assert (body["vectors"], body["private_vectors"], body["steps"]) == (2, 2, 420)
    assert body["delta"] == DELTA and body["budget_epsilon"] is None


def test_output_noise_counts_once_and_no_noise_is_unbounded(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    noisy = {"dp_sgd": False, "dp_clip": 5.0, "dp_noise": 4.0, "delta": DELTA, "epsilon": 1.0}
    with registry.client(hospital.token) as client:
        assert push(client, kit.vector(hospital.name, scale=1.03, privacy=noisy)).status_code == 201
        assert ledger(registry, hospital).json()["epsilon"] == opacus_epsilon([(4.0, 1.0, 1)])
        assert push(client, kit.vector(hospital.name, scale=1.04)).status_code == 201
    body = ledger(registry, hospital).json()
    assert body["epsilon"] is None  # a vector without noise has no guarantee
    assert (body["vectors"], body["private_vectors"]) == (2, 1)


def test_a_vector_over_the_budget_is_refused_and_nothing_is_stored(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    within = dp_sgd(1.1, 0.02, 300)
    with registry.admin() as admin:
        budget = admin.put(
            f"/hospitals/{hospital.id}/privacy-budget",
            json={"epsilon": within["epsilon"] * 1.2, "delta": DELTA},
        )
        assert budget.status_code == 200, budget.text
        assert budget.json()["remaining_epsilon"] == within["epsilon"] * 1.2
    with registry.client(hospital.token) as client:
        assert (
            push(client, kit.vector(hospital.name, scale=1.05, privacy=within)).status_code == 201
        )
        before = registry.snapshot()
        over = push(client, kit.vector(hospital.name, scale=1.06, privacy=within))
        assert over.status_code == 422
        body = error(over)
        assert body["code"] == "privacy_budget_exceeded"
        assert "would exceed the hospital's privacy budget" in body["message"]
        assert body["detail"]["epsilon_after"] > body["detail"]["budget_epsilon"]
        assert body["detail"]["spent_epsilon"] == opacus_epsilon([(1.1, 0.02, 300)])
        plain = push(client, kit.vector(hospital.name, scale=1.07))
        assert plain.status_code == 422
        assert "no differential-privacy noise" in error(plain)["message"]
        assert registry.snapshot() == before
        vectors = client.get("/vectors").json()
    assert len(vectors) == 1
    with registry.admin() as admin:
        cleared = admin.delete(f"/hospitals/{hospital.id}/privacy-budget").json()
        assert cleared["budget_epsilon"] is None
        events = admin.get("/audit", params={"target_id": hospital.id}).json()
    assert {"privacy_budget.set", "privacy_budget.cleared"} <= {e["action"] for e in events}


def test_only_admins_set_budgets_and_hospitals_read_their_own_ledger(
    registry: Registry, hospital: Hospital, other_hospital: Hospital
) -> None:
    assert ledger(registry, hospital, hospital.token).status_code == 200
    assert ledger(registry, other_hospital, hospital.token).status_code == 403
    with registry.client(hospital.token) as client:
        path = f"/hospitals/{hospital.id}/privacy-budget"
        assert client.put(path, json={"epsilon": 100, "delta": DELTA}).status_code == 403
    with registry.admin() as admin:
        for body in ({"epsilon": 0, "delta": DELTA}, {"epsilon": 1, "delta": 1.5}):
            response = admin.put(f"/hospitals/{hospital.id}/privacy-budget", json=body)
            assert response.status_code == 422
        missing = admin.put("/hospitals/nope/privacy-budget", json={"epsilon": 1, "delta": DELTA})
        assert missing.status_code == 404


#: the records of issue 22 that a vector could carry and that made pages answer 500
MALFORMED = [
    {"dp_noise": "abc"},
    {"history": [[1, 1.5, 1]]},
    {"history": [[1, 1]]},
    {"delta": "x"},
    {"dp_noise": [1]},
    {"delta": 2},
]


def hand_written(kit: ModelKit, hospital: str, privacy: Any, scale: float) -> Path:
    """A vector whose header carries ``privacy`` as written by hand: ``VectorMetadata``
    refuses a malformed record, so the JSON is edited in the file itself."""
    raw = kit.vector(hospital, scale=scale).read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + size])
    meta = json.loads(header["__metadata__"]["medvec.vector"])
    header["__metadata__"]["medvec.vector"] = json.dumps({**meta, "privacy": privacy})
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    return kit.raw(struct.pack("<Q", len(encoded)) + encoded + raw[8 + size :], "hand-written")


@pytest.mark.parametrize("record", MALFORMED, ids=json.dumps)
def test_a_malformed_privacy_record_is_refused_and_nothing_is_stored(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital, record: Any
) -> None:
    before = registry.snapshot()
    with registry.client(hospital.token) as client:
        response = push(client, hand_written(kit, hospital.name, record, 1.11))
    assert response.status_code == 422, response.text
    body = error(response)
    assert "invalid medvec.vector metadata: privacy" in body["message"]
    assert registry.snapshot() == before


def test_a_dp_sgd_declaration_without_steps_counts_as_no_guarantee(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    """Zero noisy steps cannot have produced a vector that moved: it is not epsilon 0."""
    no_steps = {"dp_sgd": True, "history": [[1.0, 1.0, 0]]}
    with registry.admin() as admin:
        path = f"/hospitals/{hospital.id}/privacy-budget"
        assert admin.put(path, json={"epsilon": 1, "delta": DELTA}).status_code == 200
    with registry.client(hospital.token) as client:
        refused = push(client, kit.vector(hospital.name, scale=1.12, privacy=no_steps))
        assert refused.status_code == 422, refused.text
        assert "no differential-privacy noise" in error(refused)["message"]
    with registry.admin() as admin:
        assert admin.delete(f"/hospitals/{hospital.id}/privacy-budget").status_code == 200
    with registry.client(hospital.token) as client:
        accepted = push(client, kit.vector(hospital.name, scale=1.12, privacy=no_steps))
        assert accepted.status_code == 201, accepted.text
    body = ledger(registry, hospital).json()
    assert body["epsilon"] is None and (body["vectors"], body["private_vectors"]) == (1, 0)


@contextmanager
def console(registry: Registry, token: str) -> Iterator[httpx.Client]:
    """A console session signed in with ``token`` (cookies over plain HTTP in tests)."""
    with httpx.Client(base_url=registry.url, timeout=60, follow_redirects=True) as client:
        form = client.get("/console/login")
        nonce = re.search(r'name="login_nonce" value="([^"]+)"', form.text)
        assert nonce is not None
        signed = client.post("/console/login", data={"token": token, "login_nonce": nonce[1]})
        assert signed.status_code == 200 and "logout" in signed.text, signed.text
        yield client


def test_rows_stored_with_a_malformed_record_break_no_page(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    """Rows stored before records were checked: every page that accounts them answers,
    says the record is invalid, and counts the hospital's spending as unbounded."""
    ids = []
    with registry.client(hospital.token) as client:
        for n, record in enumerate(MALFORMED):
            pushed = push(client, kit.vector(hospital.name, scale=1.2 + n / 100))
            assert pushed.status_code == 201, pushed.text
            ids.append(pushed.json()["id"])
            with registry.session() as session, session.begin():
                row = session.get(DataVector, ids[-1])
                assert row is not None
                row.meta = {**row.meta, "privacy": record}
    version = make_version(registry, kit, base, {i: 1 / len(ids) for i in ids})
    evaluate(registry, version["id"], EvaluationStatus.COMPLETED)

    for token in (registry.admin_token, hospital.token):
        answer = ledger(registry, hospital, token)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["invalid_records"] == len(MALFORMED) and body["epsilon"] is None
    with registry.admin() as admin:
        path = f"/hospitals/{hospital.id}/privacy-budget"
        budget = admin.put(path, json={"epsilon": 5, "delta": DELTA})
        assert budget.status_code == 200, budget.text
        assert budget.json()["invalid_records"] == len(MALFORMED)
    with registry.client(hospital.token) as client:  # nothing fits an unbounded spending
        private = kit.vector(hospital.name, scale=1.3, privacy=dp_sgd(1.1, 0.02, 300))
        refused = push(client, private)
        assert refused.status_code == 422, refused.text
        assert "already unbounded" in error(refused)["message"]
    with registry.admin() as admin:
        assert admin.delete(path).status_code == 200
        card = admin.get(f"/versions/{version['id']}/card")
        assert card.status_code == 200, card.text
        assert card.text.count("invalid privacy record") >= len(MALFORMED)
        promoted = admin.post(f"/versions/{version['id']}/promote", json={"stage": "production"})
        assert promoted.status_code == 200, promoted.text

    reader = make_hospital(registry, "reader")  # `medvec pull --production` reads this card
    with registry.client(reader.token) as client:
        production = client.get("/versions/production/card")
    assert production.status_code == 200 and "invalid privacy record" in production.text

    pages = ["/console/hospitals", f"/console/hospitals/{hospital.id}"]
    with console(registry, registry.admin_token) as admin:
        for page in [*pages, f"/console/versions/{version['id']}"]:
            shown = admin.get(page)
            assert shown.status_code == 200, page
            assert "invalid privacy record" in shown.text, page
    with console(registry, hospital.token) as own:
        shown = own.get(f"/console/hospitals/{hospital.id}")
        assert shown.status_code == 200 and "invalid privacy record" in shown.text
