"""The console's hospital and vector actions in real headless Chromium against the real
registry: screening statistics and the release and reject buttons of quarantined vectors,
the privacy budget form, removing a hospital, the contributions panel (and its secure-mode
explanation), and a hospital token denied every one of those actions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from sqlalchemy import select

from app.models import AuditEvent, ModelVersion, VersionInput
from tests.api.conftest import Hospital, Registry, make_hospital
from tests.api.factories import ModelKit
from tests.api.screening import push_scaled, screen
from tests.api.test_console import (
    csp_violations,
    session_cookie,
    sign_in,
    submit,
    text,
    version_with_an_input,
)
from tests.browser import IMPLICIT_WAIT_S

pytestmark = pytest.mark.usefixtures("signed_out")


def _audited(registry: Registry, action: str, target_id: str) -> list[AuditEvent]:
    with registry.session() as session:
        query = select(AuditEvent).where(
            AuditEvent.action == action, AuditEvent.target_id == target_id
        )
        return list(session.scalars(query))


def absent(browser: webdriver.Chrome, css: str) -> bool:
    """Whether nothing on the page matches ``css``, asked without the implicit wait."""
    browser.implicitly_wait(0)
    try:
        return not browser.find_elements(By.CSS_SELECTOR, css)
    finally:
        browser.implicitly_wait(IMPLICIT_WAIT_S)


def _vector(registry: Registry, vector_id: str) -> dict[str, Any]:
    with registry.admin() as admin:
        return dict(admin.get(f"/vectors/{vector_id}").json())


def _quarantined(registry: Registry, kit: ModelKit, scale: float, name: str) -> dict[str, Any]:
    hospital = make_hospital(registry, name)
    vector = screen(registry, push_scaled(registry, kit, hospital, scale)["id"])
    assert vector["status"] == "quarantined", vector.get("screening")
    return vector


def test_release_and_reject_quarantined_vectors_with_their_screening(
    browser: webdriver.Chrome, registry: Registry, kit: ModelKit, outlier_scale: float
) -> None:
    kept = _quarantined(registry, kit, outlier_scale, "console-kept")
    dropped = _quarantined(registry, kit, outlier_scale * 1.01, "console-dropped")
    sign_in(browser, registry, registry.admin_token)
    browser.get(f"{registry.url}/console/hospitals")
    row = text(browser, f"#quarantine-{kept['id']}")
    assert f"{kept['screening']['norm']:.3f}" in row
    assert f"{kept['screening']['cosine_to_peers']:.3f}" in row
    assert "the median" in row  # the reason

    submit(browser, By.CSS_SELECTOR, f"#quarantine-{kept['id']} button.release")
    assert text(browser, "#notice").startswith("Vector released")
    assert browser.current_url.startswith(f"{registry.url}/console/hospitals?")
    assert _vector(registry, kept["id"])["status"] == "validated"
    assert absent(browser, f"#quarantine-{kept['id']}")
    assert len(_audited(registry, "vector.released", kept["id"])) == 1

    form = f"#quarantine-{dropped['id']}"
    browser.find_element(By.CSS_SELECTOR, f"{form} input[name=reason]").send_keys("boosted x50")
    submit(browser, By.CSS_SELECTOR, f"{form} button.reject")
    assert text(browser, "#notice").startswith("Vector rejected")
    rejected = _vector(registry, dropped["id"])
    assert rejected["status"] == "rejected"
    assert rejected["reason"] == "rejected by an admin: boosted x50"
    assert len(_audited(registry, "vector.rejected", dropped["id"])) == 1

    # the hospital's own page shows its screening, the decision and the reason
    browser.get(f"{registry.url}/console/hospitals/{dropped['hospital_id']}")
    screening = text(browser, f"#screening-{dropped['id']}")
    assert "rejected" in screening and "boosted x50" in screening
    assert absent(browser, "#panel-screening button")
    assert csp_violations(browser) == []


def test_set_and_clear_a_privacy_budget(
    browser: webdriver.Chrome, registry: Registry, hospital: Hospital
) -> None:
    sign_in(browser, registry, registry.admin_token)
    page = f"{registry.url}/console/hospitals/{hospital.id}"
    browser.get(page)
    browser.find_element(By.ID, "budget-epsilon").send_keys("4")
    delta = browser.find_element(By.ID, "budget-delta")
    delta.clear()
    delta.send_keys("1e-6")
    submit(browser, By.ID, "set-budget")
    assert text(browser, "#notice") == "Privacy budget set."
    assert "ε 4 at δ 1e-06" in text(browser, "#budget")
    with registry.admin() as admin:
        ledger = admin.get(f"/hospitals/{hospital.id}/privacy").json()
    assert (ledger["budget_epsilon"], ledger["budget_delta"]) == (4.0, 1e-6)
    assert _audited(registry, "privacy_budget.set", hospital.id)

    epsilon = browser.find_element(By.ID, "budget-epsilon")
    epsilon.clear()
    epsilon.send_keys("-1")
    submit(browser, By.ID, "set-budget")
    assert "not a privacy budget" in text(browser, "#error")
    with registry.admin() as admin:
        assert admin.get(f"/hospitals/{hospital.id}/privacy").json()["budget_epsilon"] == 4.0

    browser.get(page)
    submit(browser, By.ID, "clear-budget")
    assert text(browser, "#notice") == "Privacy budget removed."
    assert "none set" in text(browser, "#budget")


def test_remove_a_hospital_after_typing_its_name(
    browser: webdriver.Chrome, registry: Registry, hospital: Hospital
) -> None:
    sign_in(browser, registry, registry.admin_token)
    browser.get(f"{registry.url}/console/hospitals/{hospital.id}")
    browser.find_element(By.ID, "remove-confirm").send_keys("not its name")
    submit(browser, By.ID, "remove")
    assert "type the hospital's name" in text(browser, "#error")
    with registry.client(hospital.token) as client:
        assert client.get("/whoami").status_code == 200

    browser.get(f"{registry.url}/console/hospitals/{hospital.id}")
    browser.find_element(By.ID, "remove-confirm").send_keys(hospital.name)
    browser.find_element(By.ID, "remove-reason").send_keys("left the consortium")
    submit(browser, By.ID, "remove")
    assert text(browser, "#notice").startswith("Hospital removed")
    assert "Removed on" in text(browser, "#removed")
    assert absent(browser, "#remove-form")
    with registry.client(hospital.token) as client:
        assert client.get("/whoami").status_code == 401
    (event,) = _audited(registry, "hospital.removed", hospital.id)
    assert event.payload["reason"] == "left the consortium"
    browser.get(f"{registry.url}/console/hospitals")
    assert text(browser, f"#hospital-{hospital.id} td.state") == "removed"


def test_contributions_panel_shows_each_hospitals_share_or_why_not(
    browser: webdriver.Chrome, registry: Registry, kit: ModelKit, base: dict[str, Any]
) -> None:
    pending = version_with_an_input(registry, kit, base)
    computed = version_with_an_input(registry, kit, base)
    secure = version_with_an_input(registry, kit, base)
    with registry.session() as session, session.begin():
        row = session.get(ModelVersion, computed["id"])
        assert row is not None
        query = select(VersionInput.vector_id).where(VersionInput.version_id == row.id)
        vector_id = session.scalars(query).one()
        # the document ``worker.contributions.compute_contributions`` stores
        row.contributions = {
            "benchmark_id": "b",
            "split": "val",
            "recalibrated_on": None,
            "all": {"accuracy": 0.8125, "auc_macro": 0.9, "sensitivity": [0.75, 0.875]},
            "hospitals": [
                {
                    "vector_id": vector_id,
                    "hospital_id": "h",
                    "accuracy": 0.0625,
                    "auc_macro": -0.01,
                    "sensitivity": [0.125, -0.03125],
                    "without": {"accuracy": 0.75, "auc_macro": 0.91, "sensitivity": [0.625, 0.9]},
                }
            ],
        }
        secure_row = session.get(ModelVersion, secure["id"])
        assert secure_row is not None
        secure_row.strategy = "secure_weighted_mean"
    sign_in(browser, registry, registry.admin_token)

    browser.get(f"{registry.url}/console/versions/{pending['id']}")
    assert "Not computed yet" in text(browser, "#panel-contributions")
    submit(browser, By.CSS_SELECTOR, "#panel-contributions button.compute-contributions")
    assert text(browser, "#notice").startswith("Contributions requested")
    assert _audited(registry, "contributions.requested", pending["id"])

    browser.get(f"{registry.url}/console/versions/{computed['id']}")
    panel = text(browser, "#panel-contributions")
    assert "+0.062" in panel and "-0.010" in panel and "+0.125, -0.031" in panel
    assert "accuracy 0.812" in panel

    browser.get(f"{registry.url}/console/versions/{secure['id']}")
    panel = text(browser, "#panel-contributions")
    assert "Not available" in panel and "secure mode" in panel
    assert absent(browser, "#panel-contributions button")
    assert csp_violations(browser) == []


def test_a_hospital_token_is_denied_every_admin_action(
    browser: webdriver.Chrome, registry: Registry, kit: ModelKit, outlier_scale: float
) -> None:
    held = _quarantined(registry, kit, outlier_scale, "console-held")
    with registry.admin() as admin:
        minted = admin.post(
            "/tokens",
            json={"name": "own", "role": "hospital", "hospital_id": held["hospital_id"]},
        ).json()
    sign_in(browser, registry, minted["token"])
    own = held["hospital_id"]
    assert browser.current_url.endswith(f"/console/hospitals/{own}")
    assert "quarantined" in text(browser, f"#screening-{held['id']}")
    for absent_id in ("budget-form", "remove-form"):
        assert absent(browser, f"#{absent_id}")
    assert absent(browser, "#panel-screening button")

    csrf = browser.find_element(By.CSS_SELECTOR, "input[name=csrf_token]").get_dom_attribute(
        "value"
    )
    cookie = session_cookie(browser)
    posts = {
        f"/console/vectors/{held['id']}/release": {},
        f"/console/vectors/{held['id']}/reject": {"reason": "mine"},
        f"/console/hospitals/{own}/privacy-budget": {"epsilon": "100", "delta": "1e-5"},
        f"/console/hospitals/{own}/remove": {"confirm_name": "x"},
    }
    jar = {cookie["name"]: cookie["value"]}
    with httpx.Client(base_url=registry.url, cookies=jar) as client:
        for url, fields in posts.items():
            denied = client.post(url, data={"csrf_token": csrf, **fields})
            assert denied.status_code == 403, url
            assert "Not allowed" in denied.text, url
    assert _vector(registry, held["id"])["status"] == "quarantined"
    with registry.admin() as admin:
        ledger = admin.get(f"/hospitals/{own}/privacy").json()
        hospitals = {h["id"]: h for h in admin.get("/hospitals").json()}
    assert ledger["budget_epsilon"] is None
    assert hospitals[own]["removed_at"] is None
