"""``/console`` pages and form posts. Each route resolves the viewer, calls a view or a
service, and renders a template; actions go through the same service calls as the API
(so the promotion gate's refusals show here with their reasons)."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from app.api.deps import SessionDep, SettingsDep, client_ip
from app.console import views
from app.console.deps import (
    COOKIE,
    LOGIN_COOKIE,
    FormViewer,
    Viewer,
    ViewerDep,
    signer,
)
from app.errors import AppError, InvalidInput, Unauthenticated, status_of
from app.models import Role, VersionStatus
from app.schemas.privacy import PrivacyBudgetSet
from app.services import (
    console_sessions,
    contributions,
    hospitals,
    privacy,
    quarantine,
    versions,
)
from app.services.gates import policy_of
from app.templating import render

router = APIRouter(prefix="/console", include_in_schema=False)

#: what a redirect after a successful action says (by code, so no text comes from the URL)
NOTICES = {
    "promoted": "Version promoted.",
    "rolled-back": "Production rolled back to the previous version.",
    "revoked": "Token revoked.",
    "signed-out": "Signed out.",
    "released": "Vector released: merges may take it again.",
    "rejected": "Vector rejected; its hospital sees the reason.",
    "budget-set": "Privacy budget set.",
    "budget-cleared": "Privacy budget removed.",
    "hospital-removed": "Hospital removed: its tokens are revoked and merges no longer take "
    "its vectors.",
    "contributions-requested": "Contributions requested: a worker computes them.",
}
NO_STORE = {"Cache-Control": "no-store"}


def page(
    request: Request, template: str, viewer: Viewer | None, status: int = 200, **context: Any
) -> HTMLResponse:
    notice = NOTICES.get(request.query_params.get("notice", ""))
    html = render(
        f"console/{template}",
        viewer=viewer,
        actor=viewer.actor if viewer else None,
        csrf_token=viewer.csrf_token if viewer else "",
        notice=notice,
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def back_to(back: str, notice: str) -> RedirectResponse:
    """Back to the console page a form came from (only a console path: never elsewhere)."""
    if not back.startswith("/console") or "//" in back or "\\" in back:
        back = "/console/hospitals"
    return see_other(f"{back.split('?')[0]}?notice={notice}")


def home_of(viewer_role: Role, hospital_id: str | None) -> str:
    return "/console" if viewer_role is Role.ADMIN else f"/console/hospitals/{hospital_id}"


# -- sign-in ------------------------------------------------------------------
@router.get("/login")
def login_form(request: Request, error: str | None = None, status: int = 200) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    response = page(request, "login.html", None, status, login_nonce=nonce, error=error)
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console/login",
        max_age=600,
    )
    return response


@router.post("/login")
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    token: Annotated[str, Form()],
    login_nonce: Annotated[str, Form()],
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not secrets.compare_digest(expected, login_nonce):
        return login_form(request, "The sign-in form expired; try again.", 400)
    try:
        row, secret, actor = console_sessions.sign_in(
            session, token, client_ip(request), settings.console_session_ttl
        )
    except Unauthenticated as exc:
        return login_form(request, exc.text, 401)
    response = see_other(home_of(actor.role, actor.hospital_id))
    response.set_cookie(
        COOKIE,
        signer(request).sign(secret).decode(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/console",
        max_age=int(settings.console_session_ttl.total_seconds()),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    return response


@router.post("/logout")
def logout(session: SessionDep, viewer: FormViewer) -> Response:
    console_sessions.sign_out(session, viewer.row, viewer.actor)
    response = see_other("/console/login?notice=signed-out")
    response.delete_cookie(COOKIE, path="/console")
    return response


# -- pages --------------------------------------------------------------------
@router.get("")
def overview(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    if not viewer.actor.is_admin:
        return see_other(home_of(viewer.actor.role, viewer.actor.hospital_id))
    return page(request, "overview.html", viewer, **views.overview_page(session))


@router.get("/versions")
def versions_list(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    sort: str = "created_at",
    order: str = "desc",
) -> Response:
    views.require_admin_viewer(viewer.actor)
    context = views.versions_page(session, sort, order != "asc")
    return page(request, "versions.html", viewer, **context)


@router.get("/versions/{version_id}")
def version_detail(
    request: Request, version_id: str, session: SessionDep, viewer: ViewerDep
) -> Response:
    views.require_admin_viewer(viewer.actor)
    return page(
        request, "version.html", viewer, **views.version_page(session, viewer.actor, version_id)
    )


@router.post("/versions/{version_id}/promote")
def promote(
    request: Request,
    version_id: str,
    session: SessionDep,
    viewer: FormViewer,
    settings: SettingsDep,
    stage: Annotated[str, Form()] = "production",
    force: Annotated[bool, Form()] = False,
) -> Response:
    """The API's promotion: the same service call, so every refusal shows with its reasons."""
    views.require_admin_viewer(viewer.actor)
    try:
        versions.promote(
            session,
            viewer.actor,
            version_id,
            stage=VersionStatus(stage),
            force=force,
            gate=policy_of(settings),
        )
    except (AppError, ValueError) as exc:
        session.rollback()
        return refused(request, session, viewer, exc, version_id)
    return see_other("/console/versions?notice=promoted")


@router.post("/rollback")
def rollback(request: Request, session: SessionDep, viewer: FormViewer) -> Response:
    views.require_admin_viewer(viewer.actor)
    try:
        versions.rollback(session, viewer.actor)
    except AppError as exc:
        session.rollback()
        return refused(request, session, viewer, exc, None)
    return see_other("/console/versions?notice=rolled-back")


def refused(
    request: Request,
    session: Any,
    viewer: Viewer,
    exc: Exception,
    version_id: str | None,
) -> HTMLResponse:
    """The versions page again, with the refusal's message and every reason it gives."""
    if isinstance(exc, AppError):
        status, message, detail = status_of(exc), exc.text, exc.detail or {}
    else:
        status, message, detail = 422, f"not a stage: {exc}", {}
    context = views.versions_page(session, "created_at", True)
    refusal = {"version_id": version_id, "message": message, "detail": detail}
    return page(request, "versions.html", viewer, status, refusal=refusal, **context)


@router.get("/hospitals")
def hospitals_list(request: Request, session: SessionDep, viewer: ViewerDep) -> Response:
    views.require_admin_viewer(viewer.actor)
    return page(request, "hospitals.html", viewer, **views.hospitals_page(session))


@router.get("/hospitals/{hospital_id}")
def hospital_detail(
    request: Request, hospital_id: str, session: SessionDep, viewer: ViewerDep
) -> Response:
    context = views.hospital_page(session, viewer.actor, hospital_id)
    return page(request, "hospital.html", viewer, **context)


@router.post("/tokens")
def create_token(
    request: Request,
    session: SessionDep,
    viewer: FormViewer,
    name: Annotated[str, Form()],
    role: Annotated[Role, Form()],
    hospital_id: Annotated[str, Form()] = "",
) -> Response:
    """Mint a token and show its secret on this one page (never again, never stored)."""
    views.require_admin_viewer(viewer.actor)
    try:
        token, secret = hospitals.create_token(
            session, viewer.actor, name=name, role=role, hospital_id=hospital_id or None
        )
    except AppError as exc:
        session.rollback()
        context = views.hospitals_page(session)
        error = exc.text
        return page(request, "hospitals.html", viewer, status_of(exc), error=error, **context)
    context = views.hospitals_page(session)
    return page(request, "hospitals.html", viewer, 201, new_token=(token, secret), **context)


@router.post("/tokens/{token_id}/revoke")
def revoke_token(token_id: str, session: SessionDep, viewer: FormViewer) -> Response:
    views.require_admin_viewer(viewer.actor)
    hospitals.revoke_token(session, viewer.actor, token_id)
    return see_other("/console/hospitals?notice=revoked")


@router.post("/vectors/{vector_id}/release")
def release_vector(
    vector_id: str, session: SessionDep, viewer: FormViewer, back: Annotated[str, Form()] = ""
) -> Response:
    """The API's release (``app.services.quarantine``): audited, asks the auto-merge."""
    views.require_admin_viewer(viewer.actor)
    quarantine.release(session, viewer.actor, vector_id, note=None)
    return back_to(back, "released")


@router.post("/vectors/{vector_id}/reject")
def reject_vector(
    vector_id: str,
    session: SessionDep,
    viewer: FormViewer,
    reason: Annotated[str, Form(min_length=1, max_length=2000)],
    back: Annotated[str, Form()] = "",
) -> Response:
    views.require_admin_viewer(viewer.actor)
    quarantine.reject(session, viewer.actor, vector_id, reason)
    return back_to(back, "rejected")


@router.post("/hospitals/{hospital_id}/privacy-budget")
def set_privacy_budget(
    hospital_id: str,
    session: SessionDep,
    viewer: FormViewer,
    epsilon: Annotated[str, Form()] = "",
    delta: Annotated[str, Form()] = "1e-5",
    clear: Annotated[bool, Form()] = False,
) -> Response:
    """The API's budget (``app.services.privacy``), checked by the API's schema."""
    views.require_admin_viewer(viewer.actor)
    back = f"/console/hospitals/{hospital_id}"
    if clear:
        privacy.clear_budget(session, viewer.actor, hospital_id)
        return back_to(back, "budget-cleared")
    try:
        # a form sends text: the schema reads its numbers from strings, as it would from JSON
        budget = PrivacyBudgetSet.model_validate_strings({"epsilon": epsilon, "delta": delta})
    except ValidationError as exc:
        problems = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"not a privacy budget: {problems}") from exc
    privacy.set_budget(
        session, viewer.actor, hospital_id, epsilon=budget.epsilon, delta=budget.delta
    )
    return back_to(back, "budget-set")


@router.post("/hospitals/{hospital_id}/remove")
def remove_hospital(
    hospital_id: str,
    session: SessionDep,
    viewer: FormViewer,
    confirm_name: Annotated[str, Form()],
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Remove a hospital once the admin typed its name (``app.services.hospitals``)."""
    views.require_admin_viewer(viewer.actor)
    hospital = hospitals.get_hospital(session, hospital_id)
    if confirm_name.strip() != hospital.name:
        raise InvalidInput(
            f"type the hospital's name ({hospital.name}) to remove it; nothing was changed"
        )
    hospitals.remove_hospital(session, viewer.actor, hospital_id, reason or None)
    return back_to(f"/console/hospitals/{hospital_id}", "hospital-removed")


@router.post("/versions/{version_id}/contributions")
def request_contributions(version_id: str, session: SessionDep, viewer: FormViewer) -> Response:
    views.require_admin_viewer(viewer.actor)
    contributions.request_contributions(session, viewer.actor, version_id)
    return see_other(f"/console/versions/{version_id}?notice=contributions-requested")


@router.get("/jobs")
def jobs(
    request: Request,
    session: SessionDep,
    viewer: ViewerDep,
    action: str | None = None,
    target_id: str | None = None,
) -> Response:
    views.require_admin_viewer(viewer.actor)
    context = views.jobs_page(session, action or None, target_id or None)
    return page(request, "jobs.html", viewer, **context)
