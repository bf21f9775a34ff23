"""Model cards: ``GET /versions/{id}/card`` in Markdown, from the registry's records."""

from __future__ import annotations

import re
from html import escape, unescape
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.models import DataVector, Evaluation, EvaluationStatus
from app.services.privacy import INVALID_RECORD
from app.templating import code, markdown_html, markdown_text
from tests.api.conftest import Hospital, Registry, make_hospital
from tests.api.factories import ModelKit, tuned_metrics
from tests.api.helpers import console_client, push
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


#: hospital-controlled text that markdown would turn into an image, links, HTML, code, a
#: table cell or a heading if the card interpolated it as markup
PAYLOADS = (
    "![px](http://attacker.invalid/p.png)",
    "[phish](https://attacker.invalid/login)",
    "<img src=x onerror=alert(1)>",
    "<https://attacker.invalid/auto>",
    "www.attacker.invalid/bare",
    "`` `](https://attacker.invalid/tick) ``",
    "a | b",
    "line\n\n# heading\n![px2](http://attacker.invalid/q.png)",
    "&lt;b&gt; *bold* _it_ ~~gone~~ \\",
)
LEGACY_CLIP = "[clip](https://attacker.invalid/clip)"


def _visible_text(html: str) -> str:
    """The text a browser shows for ``html``, whitespace collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def _shown_literally(payload: str, text: str) -> bool:
    return " ".join(payload.split()) in text


def test_hospital_metadata_is_text_in_the_card_and_on_the_console(
    registry: Registry, base: dict[str, Any], kit: ModelKit
) -> None:
    name = "St. [Mary](https://attacker.invalid/h) ![x](http://attacker.invalid/h.png) | <b>"
    with registry.admin() as admin:
        created = admin.post("/hospitals", json={"name": name})
        assert created.status_code == 201, created.text
        token = admin.post(
            "/tokens",
            json={"name": "md-token", "role": "hospital", "hospital_id": created.json()["id"]},
        ).json()["token"]
    histogram = {payload: n + 1 for n, payload in enumerate(PAYLOADS)}
    path = kit.vector(name, label_histogram=histogram, training={"note": PAYLOADS[0]})
    with registry.client(token) as client:
        pushed = push(client, path)
    assert pushed.status_code == 201, pushed.text
    vector_id = pushed.json()["id"]
    with registry.session() as session, session.begin():
        # a row stored before the push-time checks of ``privacy``, its clip a link: the
        # card says the record is invalid and never shows its text
        row = session.get(DataVector, vector_id)
        assert row is not None
        row.meta = {**row.meta, "privacy": {"dp_clip": LEGACY_CLIP}}
    version = make_version(registry, kit, base, {vector_id: 1.0})

    card = card_of(registry, version["id"], registry.admin_token).text
    assert "attacker.invalid" in card
    assert "http://attacker" not in card and "https://attacker" not in card, card
    assert "www.attacker" not in card  # no autolink for renderers that make bare ones
    rendered = markdown_html(card)
    assert "<img" not in rendered and "<a " not in rendered, rendered
    inputs = rendered.split("<h2>Training data")[1].split("<h2>Merge")[0]
    assert "<h1>heading" not in rendered and "<code>" not in inputs, inputs
    shown = _visible_text(rendered)
    for text in (*PAYLOADS, name, INVALID_RECORD):
        assert _shown_literally(text, shown), text
    assert "attacker.invalid/clip" not in card

    with console_client(registry.url, registry.admin_token) as console:
        page = console.get(f"/console/versions/{version['id']}")
    assert page.status_code == 200
    assert "<img" not in page.text and 'href="http' not in page.text, page.text
    model_card = page.text.split('id="model-card"')[1]
    shown = _visible_text(model_card)
    for text in (*PAYLOADS, name, INVALID_RECORD):
        assert _shown_literally(text, shown), text
    assert "attacker.invalid/clip" not in page.text
    policy = page.headers["content-security-policy"]
    for directive in ("default-src 'self'", "img-src 'self' data:", "frame-ancestors 'none'"):
        assert directive in policy, policy
    assert "unsafe-inline" not in policy


def test_a_code_span_holds_any_backticks_and_a_block_marker_stays_text() -> None:
    for value in ("a ` b", "``x``", "`", "x ``` y"):
        assert markdown_html(code(value)) == f"<p><code>{escape(value)}</code></p>\n", value
    for value in ("# heading", "1. item", "- item", "> quote", "=== ", "+ item"):
        assert markdown_html(f"- {markdown_text(value)}") == (
            f"<ul>\n<li>{escape(value.strip())}</li>\n</ul>\n"
        ), value
