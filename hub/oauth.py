"""The browser install flows: `GET /oauth/<crm>/install` and `GET /oauth/<crm>/callback`, for the hub's
HubSpot app and Salesforce connected app (the vendor side lives in hub/oauth_apps.py).

Only an admin starts an install: `hub install-link` prints a link whose ticket names the workspace, is
signed with HUB_SECRET_KEY and works for an hour (`install_link`). Without a valid ticket nobody can
connect their own portal or org to someone's workspace. `install` checks the ticket, binds a random
nonce to the browser (Flask's signed session cookie) and redirects to the vendor with a signed `state`
(crm, workspace, nonce; 10 minutes). `callback` takes only that state, back in the same browser (the
CSRF check; the nonce is used once), exchanges the code and stores the connection through
hub.admin.connect, as `hub connect` does, then checks the score fields as `hub connect` does.

Every refusal is JSON `{"error": reason, "detail": ...}` and stores nothing; tokens never reach a log
line or an answer.
"""
from __future__ import annotations

import hmac
import logging
import secrets

from flask import Blueprint, redirect, request, session
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from markupsafe import escape

from hub import admin, defaults
from hub.db import transaction
from hub.exceptions import HubError, OAuthError
from hub.oauth_apps import APPS, Installation, OAuthApp
from hub.runtime import current_runtime
from webhooks.responses import error

logger = logging.getLogger(__name__)

bp = Blueprint("oauth", __name__, url_prefix="/oauth")

TICKET_SALT = "hub.oauth.install-ticket"
STATE_SALT = "hub.oauth.state"
NONCE_SESSION_KEY = "oauth_nonces"       # {crm: nonce} of the installs this browser started


# --- install links (the CLI) ------------------------------------------------------------------------

def install_link(runtime, crm: str, workspace_id: str, login_url: str | None = None) -> dict:
    """A signed link that lets whoever opens it within the hour install `crm` into this workspace.

    `login_url` (Salesforce): the login host of the org, e.g. https://test.salesforce.com for a sandbox."""
    _app_config(runtime.settings, crm)
    with transaction(runtime.engine) as db_session:
        admin.require_workspace(db_session, workspace_id)
    ticket = {"crm": crm, "workspace": workspace_id}
    if login_url:
        ticket["login_url"] = login_url.rstrip("/")
    token = _serializer(runtime, TICKET_SALT).dumps(ticket)
    return {"install_url": f"{admin.base_url(runtime)}/oauth/{crm}/install?ticket={token}",
            "expires_in": defaults.OAUTH_TICKET_MAX_AGE_SECONDS}


# --- routes ---------------------------------------------------------------------------------------

@bp.get("/<crm>/install")
def install(crm: str):
    runtime = current_runtime()
    try:
        _app_config(runtime.settings, crm)
        ticket = _load(runtime, TICKET_SALT, "ticket", defaults.OAUTH_TICKET_MAX_AGE_SECONDS, crm)
        app = _app(runtime, crm, ticket.get("login_url"))
    except OAuthError as exc:
        return _refuse(crm, exc)
    nonce = secrets.token_urlsafe(defaults.OAUTH_NONCE_BYTES)
    state = _serializer(runtime, STATE_SALT).dumps({**ticket, "nonce": nonce})
    session[NONCE_SESSION_KEY] = {**session.get(NONCE_SESSION_KEY, {}), crm: nonce}
    return redirect(app.authorize_url(_redirect_uri(runtime, crm), state), 302)


@bp.get("/<crm>/callback")
def callback(crm: str):
    runtime = current_runtime()
    try:
        _app_config(runtime.settings, crm)           # configured at all, before anything is read
        state = _load(runtime, STATE_SALT, "state", defaults.OAUTH_STATE_MAX_AGE_SECONDS, crm)
        _check_same_browser(crm, state.get("nonce"))
        _check_vendor_error(crm)
        code = request.args.get("code")
        if not code:
            raise OAuthError("code_missing", 400, "the callback carries no authorization code")
        app = _app(runtime, crm, state.get("login_url"))
        installation = app.install(code, _redirect_uri(runtime, crm))
        answer = _store(runtime, app, state["workspace"], installation)
    except OAuthError as exc:
        return _refuse(crm, exc)
    logger.info("oauth install: %s account %s connected to workspace %s",
                crm, installation.account_id, state["workspace"])
    answer.update(crm=crm, workspace_id=state["workspace"], account_id=installation.account_id,
                  score_fields=_check_hub_fields(runtime, state["workspace"], crm))
    return _connected(answer)


# --- steps ----------------------------------------------------------------------------------------

def _app_config(settings, crm: str) -> dict:
    if crm not in APPS:
        raise OAuthError("unknown_crm", 404, f"one of {', '.join(APPS)}")
    if settings.secret_key == defaults.DEV_SECRET_KEY:
        raise OAuthError("oauth_not_configured", 503, "set HUB_SECRET_KEY: install links are signed with it")
    config = settings.oauth_apps.get(crm)
    if not config:
        prefix = f"HUB_{crm.upper()}_"
        raise OAuthError("oauth_not_configured", 503, f"set {prefix}CLIENT_ID and {prefix}CLIENT_SECRET")
    return config


def _app(runtime, crm: str, login_url: str | None) -> OAuthApp:
    return APPS[crm](runtime.settings, _app_config(runtime.settings, crm), login_url=login_url)


def _serializer(runtime, salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(runtime.settings.secret_key, salt=salt)


def _load(runtime, salt: str, name: str, max_age: int, crm: str) -> dict:
    """The signed `name` query parameter (ticket or state), checked for signature, age and crm."""
    token = request.args.get(name)
    if not token:
        raise OAuthError(f"{name}_missing", 400, f"the link carries no {name}")
    try:
        payload = _serializer(runtime, salt).loads(token, max_age=max_age)
    except SignatureExpired:
        hint = "; run `hub install-link` again" if name == "ticket" else "; start the install again"
        raise OAuthError(f"{name}_expired", 401, f"the {name} is older than {max_age} seconds{hint}") from None
    except BadSignature:
        raise OAuthError(f"{name}_invalid", 401, f"the {name} is not one the hub signed") from None
    if not isinstance(payload, dict) or payload.get("crm") != crm or not payload.get("workspace"):
        raise OAuthError(f"{name}_invalid", 401, f"the {name} is not for {crm}")
    return payload


def _check_same_browser(crm: str, nonce: str | None) -> None:
    """The state must come back to the browser that started the install (each nonce is used once)."""
    nonces = dict(session.get(NONCE_SESSION_KEY, {}))
    expected = nonces.pop(crm, None)
    session[NONCE_SESSION_KEY] = nonces
    if not expected or not nonce or not hmac.compare_digest(str(expected), str(nonce)):
        raise OAuthError("state_mismatch", 403, "this install was started in another browser session")


def _check_vendor_error(crm: str) -> None:
    vendor_error = request.args.get("error")
    if vendor_error:
        description = request.args.get("error_description") or ""
        detail = f"{crm} answered {vendor_error}" + (f": {description}" if description else "")
        raise OAuthError("authorization_refused", 400, detail[:defaults.OAUTH_VENDOR_ERROR_MAX_CHARS])


def _redirect_uri(runtime, crm: str) -> str:
    """The same string in the authorize request and in the code exchange (the vendor compares them)."""
    base = runtime.settings.public_url or request.url_root.rstrip("/")
    return f"{base}/oauth/{crm}/callback"


def _store(runtime, app: OAuthApp, workspace_id: str, installation: Installation) -> dict:
    try:
        return admin.connect(runtime, workspace_id, app.kind, installation.account_id,
                             installation.credentials, installation.settings)
    except admin.AccountConnectedElsewhere as exc:
        raise OAuthError("account_connected_elsewhere", 409, str(exc)) from None
    except admin.AdminError as exc:
        raise OAuthError("unknown_workspace", 404, str(exc)) from None


def _check_hub_fields(runtime, workspace_id: str, crm: str) -> str:
    """As after `hub connect`: create (HubSpot) or check (Salesforce) the score fields, one quick attempt."""
    try:
        missing = admin.ensure_hub_fields(runtime, workspace_id, crm)
    except HubError as exc:
        logger.warning("oauth install: %s score fields not checked (%s)", crm, type(exc).__name__)
        return f"not checked ({type(exc).__name__}); run `hub rules preflight --workspace {workspace_id}`"
    return "ok" if not missing else "missing " + ", ".join(missing)


# --- answers --------------------------------------------------------------------------------------

def _refuse(crm: str, exc: OAuthError):
    logger.info("oauth %s refused: %s", crm if crm in APPS else "?", exc.reason)
    return error(exc.status, exc.reason, exc.detail)


def _connected(answer: dict):
    """JSON for scripts, a small page for the admin's browser: what to configure next."""
    values = {name: answer[name] for name in
              ("crm", "workspace_id", "account_id", "connection_id", "webhook_url", "score_fields")}
    if request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json":
        return {"connected": True, **values}
    where = ("the webhook target URL of the HubSpot app" if values["crm"] == "hubspot"
             else "the endpoint URL of a Salesforce Outbound Message (on Lead and Contact)")
    rows = "".join(f"<tr><th>{escape(name)}</th><td><code>{escape(value)}</code></td></tr>"
                   for name, value in values.items())
    return (f"<!doctype html><html><head><meta charset=utf-8><title>lead hub: {escape(values['crm'])} connected"
            f"</title></head><body><h1>{escape(values['crm'])} connected</h1><table>{rows}</table>"
            f"<p>Set {where} to <code>{escape(values['webhook_url'])}</code>.</p></body></html>",
            200, {"Content-Type": "text/html; charset=utf-8"})
