"""The admin console in real headless Chromium against the real registry: sign-in, the
pages, promotion (and a refused one with its reasons), rollback, tokens, CSRF, and a
hospital kept to its own page."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import select

from app.models import ConsoleSession, Evaluation, EvaluationStatus
from tests.api.conftest import Hospital, Registry, make_hospital
from tests.api.factories import ModelKit, tuned_metrics
from tests.api.helpers import push
from tests.api.test_versions import evaluate, make_version, no_production  # noqa: F401

pytestmark = pytest.mark.usefixtures("signed_out")


@pytest.fixture(scope="module")
def real_metrics(kit: ModelKit, datasets_dir: Path) -> dict[str, Any]:
    return tuned_metrics(kit, datasets_dir)


def sign_in(browser: webdriver.Chrome, registry: Registry, token: str) -> None:
    browser.get(f"{registry.url}/console/login")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "sign-in").click()
    # the click returns before the answer sets the cookie: wait for the next page
    browser.find_element(By.CSS_SELECTOR, "#logout, #error")


def submit(browser: webdriver.Chrome, by: str, what: str) -> None:
    """Click a form's button and wait for the answer to replace the page: reading right
    after the click can read the old page (the rollback after a promotion did)."""
    old = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(by, what).click()
    WebDriverWait(browser, 30).until(lambda _: replaced(old))


def replaced(element: WebElement) -> bool:
    """Whether ``element`` left the document. Chromium sometimes reports a node of the
    page just replaced as an inspector error instead of a stale reference (seen on the
    refused-promotion test): both mean the new page is there."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in (exc.msg or ""):
            return True
        raise
    return False


def text(browser: webdriver.Chrome, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def status_of(registry: Registry, version_id: str) -> str:
    with registry.admin() as admin:
        return str(admin.get(f"/versions/{version_id}").json()["status"])


def version_with_an_input(registry: Registry, kit: ModelKit, base: dict[str, Any]) -> Any:
    """A candidate version made of one real pushed vector: the registry stays consistent
    for the tests that share it (fsck reports a version without inputs)."""
    hospital = make_hospital(registry, "console")
    with registry.client(hospital.token) as client:
        pushed = push(client, kit.vector(hospital.name))
    assert pushed.status_code == 201, pushed.text
    return make_version(registry, kit, base, {pushed.json()["id"]: 1.0})


def evaluated_version(
    registry: Registry,
    kit: ModelKit,
    base: dict[str, Any],
    metrics: Any,
    benchmark_id: str | None = None,
) -> str:
    """A version with a completed evaluation holding ``metrics`` (on ``benchmark_id``, so
    that the promotion gate can compare two versions)."""
    version = version_with_an_input(registry, kit, base)
    evaluate(registry, version["id"], EvaluationStatus.COMPLETED, benchmark_id)
    with registry.session() as session, session.begin():
        row = session.scalar(select(Evaluation).where(Evaluation.version_id == version["id"]))
        assert row is not None
        row.metrics = metrics
    return str(version["id"])


def benchmark_of(registry: Registry, version_id: str) -> str:
    with registry.session() as session:
        row = session.scalar(select(Evaluation).where(Evaluation.version_id == version_id))
        assert row is not None
        return str(row.benchmark_id)


def session_cookie(browser: webdriver.Chrome) -> dict[str, Any]:
    cookies = {c["name"]: c for c in browser.get_cookies()}
    return cookies["medvec_console"]


def test_sign_in_sets_a_strict_http_only_session_and_shows_every_page(
    browser: webdriver.Chrome,
    registry: Registry,
    base: dict[str, Any],
    kit: ModelKit,
    real_metrics: dict[str, Any],
) -> None:
    version_id = evaluated_version(registry, kit, base, real_metrics)
    sign_in(browser, registry, registry.admin_token)
    assert browser.current_url.endswith("/console")
    cookie = session_cookie(browser)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert registry.admin_token not in str(browser.get_cookies())
    assert "Recent activity" in browser.page_source
    assert "console.signed_in" in text(browser, "#activity")

    browser.get(f"{registry.url}/console/versions?sort=accuracy&order=desc")
    assert version_id[:8] in text(browser, "#versions")
    links = browser.find_elements(By.CSS_SELECTOR, "#lineage a")
    assert f"/console/versions/{version_id}" in {link.get_dom_attribute("href") for link in links}
    first_accuracy = text(browser, "#versions tr:nth-child(2) td.metric-accuracy")
    assert first_accuracy == f"{real_metrics['accuracy']:.3f}" or float(first_accuracy) >= float(
        real_metrics["accuracy"]
    )

    browser.get(f"{registry.url}/console/versions/{version_id}")
    per_class = text(browser, "table.per-class")
    assert f"{real_metrics['sensitivity'][0]:.3f}" in per_class
    assert "[" in per_class  # the bootstrap intervals
    matrix = text(browser, "table.cm")
    assert str(real_metrics["confusion_matrix"][0][0]) in matrix
    assert f"ECE {real_metrics['ece']:.3f}" in browser.page_source
    assert "Known limitations" in text(browser, "#model-card")
    # styled by the console's stylesheet, the one style source its policy allows
    header = browser.find_element(By.TAG_NAME, "header")
    assert header.value_of_css_property("background-color") == "rgba(15, 23, 42, 1)"
    shaded = browser.find_elements(By.CSS_SELECTOR, "table.cm td[class^='hit-']")
    assert shaded and all(
        cell.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
        for cell in shaded
        if not cell.get_dom_attribute("class").endswith("-0")
    )

    browser.get(f"{registry.url}/console/hospitals")
    assert "Tokens" in browser.page_source
    browser.get(f"{registry.url}/console/jobs")
    Select(browser.find_element(By.ID, "audit-action")).select_by_value("console.signed_in")
    submit(browser, By.CSS_SELECTOR, "#audit-filter button")
    actions = {e.text for e in browser.find_elements(By.CSS_SELECTOR, "#audit td.action")}
    assert actions == {"console.signed_in"}
    assert csp_violations(browser) == []


def csp_violations(browser: webdriver.Chrome) -> list[str]:
    """What the pages shown since the last call did that their Content-Security-Policy
    refused (Chromium logs each refusal to the page's console)."""
    return [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]


def test_a_wrong_token_is_refused_and_pages_need_a_session(
    browser: webdriver.Chrome, registry: Registry
) -> None:
    browser.get(f"{registry.url}/console/versions")
    assert browser.current_url.endswith("/console/login")
    sign_in(browser, registry, "mv_" + secrets.token_urlsafe(32))
    assert "not valid" in text(browser, "#error")
    assert "medvec_console" not in {c["name"] for c in browser.get_cookies()}


def test_promote_then_roll_back_from_the_versions_page(
    browser: webdriver.Chrome,
    registry: Registry,
    base: dict[str, Any],
    kit: ModelKit,
    real_metrics: dict[str, Any],
) -> None:
    first = evaluated_version(registry, kit, base, real_metrics)
    second = evaluated_version(registry, kit, base, real_metrics, benchmark_of(registry, first))
    sign_in(browser, registry, registry.admin_token)
    for version_id in (first, second):
        browser.get(f"{registry.url}/console/versions")
        submit(browser, By.CSS_SELECTOR, f"#version-{version_id} button.promote")
        assert text(browser, "#notice") == "Version promoted."
        assert text(browser, f"#version-{version_id} td.status") == "production"
    assert status_of(registry, first) == "archived"

    submit(browser, By.ID, "rollback")
    assert "rolled back" in text(browser, "#notice")
    assert status_of(registry, first) == "production"
    assert status_of(registry, second) == "archived"
    assert text(browser, f"#version-{first} td.status") == "production"


def test_a_refused_promotion_shows_its_reasons(
    browser: webdriver.Chrome, registry: Registry, base: dict[str, Any], kit: ModelKit
) -> None:
    version = version_with_an_input(registry, kit, base)  # never evaluated
    sign_in(browser, registry, registry.admin_token)
    browser.get(f"{registry.url}/console/versions")
    submit(browser, By.CSS_SELECTOR, f"#version-{version['id']} button.promote")
    refusal = text(browser, "#refusal")
    assert "has no completed evaluation" in refusal
    assert "evaluate it on a benchmark first" in refusal
    assert status_of(registry, version["id"]) == "candidate"


def test_create_a_token_shown_once_then_revoke_it(
    browser: webdriver.Chrome, registry: Registry, hospital: Hospital
) -> None:
    sign_in(browser, registry, registry.admin_token)
    browser.get(f"{registry.url}/console/hospitals")
    name = f"console-{secrets.token_hex(3)}"
    browser.find_element(By.ID, "token-name").send_keys(name)
    Select(browser.find_element(By.ID, "token-hospital")).select_by_value(hospital.id)
    submit(browser, By.CSS_SELECTOR, "#create-token button")
    secret = text(browser, "#new-token-secret")
    with registry.client(secret) as client:
        assert client.get("/whoami").json()["hospital_id"] == hospital.id
    browser.get(f"{registry.url}/console/hospitals")
    assert secret not in browser.page_source

    with registry.admin() as admin:
        token_id = next(t["id"] for t in admin.get("/tokens").json() if t["name"] == name)
    submit(browser, By.CSS_SELECTOR, f"#token-{token_id} button.revoke")
    assert text(browser, "#notice") == "Token revoked."
    assert text(browser, f"#token-{token_id} td.state") == "revoked"
    with registry.client(secret) as client:
        assert client.get("/whoami").status_code == 401


def test_a_hospital_sees_its_own_page_only(
    browser: webdriver.Chrome, registry: Registry, hospital: Hospital, kit: ModelKit, base: Any
) -> None:
    other = make_hospital(registry, "other")
    with registry.client(hospital.token) as client:
        assert push(client, kit.vector(hospital.name, scale=1.5)).status_code in (200, 201)
    sign_in(browser, registry, hospital.token)
    assert browser.current_url.endswith(f"/console/hospitals/{hospital.id}")
    assert hospital.name in text(browser, "h1")
    assert "1 vectors" in text(browser, "#privacy")
    for page in ("", "/versions", "/hospitals", "/jobs", f"/hospitals/{other.id}"):
        browser.get(f"{registry.url}/console{page}")
        if page == "":
            assert browser.current_url.endswith(f"/console/hospitals/{hospital.id}")
            continue
        assert "Not allowed" in text(browser, "h1"), page
        assert other.name not in browser.page_source


def test_forms_without_the_csrf_token_change_nothing(
    browser: webdriver.Chrome, registry: Registry, hospital: Hospital
) -> None:
    sign_in(browser, registry, registry.admin_token)
    cookie = session_cookie(browser)
    jar = {cookie["name"]: cookie["value"]}
    with httpx.Client(base_url=registry.url, cookies=jar) as client:
        forged = client.post(f"/console/tokens/{hospital.token_id}/revoke", data={})
        assert forged.status_code == 403
        wrong = client.post(
            f"/console/tokens/{hospital.token_id}/revoke", data={"csrf_token": "x" * 43}
        )
        assert wrong.status_code == 403
    with registry.client(hospital.token) as api:
        assert api.get("/whoami").status_code == 200


def test_signing_out_or_revoking_the_token_ends_the_session(
    browser: webdriver.Chrome, registry: Registry
) -> None:
    with registry.admin() as admin:
        made = admin.post("/tokens", json={"name": "console-admin", "role": "admin"}).json()
    sign_in(browser, registry, made["token"])
    cookie = session_cookie(browser)
    jar = {cookie["name"]: cookie["value"]}
    with httpx.Client(base_url=registry.url, cookies=jar) as client:
        assert client.get("/console/jobs").status_code == 200
        with registry.admin() as admin:
            assert admin.delete(f"/tokens/{made['id']}").status_code == 200
        ended = client.get("/console/jobs")
        assert ended.status_code == 303
        assert ended.headers["location"] == "/console/login"

    sign_in(browser, registry, registry.admin_token)
    cookie = session_cookie(browser)
    submit(browser, By.ID, "logout")
    assert browser.current_url.endswith("/console/login?notice=signed-out")
    with httpx.Client(base_url=registry.url, cookies={cookie["name"]: cookie["value"]}) as client:
        assert client.get("/console").status_code == 303
    with registry.session() as session:
        ended_rows = session.scalars(
            select(ConsoleSession).where(ConsoleSession.ended_at.is_not(None))
        ).all()
    assert ended_rows
