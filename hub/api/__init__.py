"""The REST API under /api/v1: Bearer API-key authentication, problem+json errors, the blueprint.

A workspace's API key (printed once by `hub workspace create`) is stored only as its SHA-256; a
request's `Authorization: Bearer <key>` selects the workspace every query is limited to. Errors are
`application/problem+json` (RFC 9457) with a machine-readable `reason` member. Endpoint modules:
`contacts` (read the unified record, its score and where it came from), `erasures` (GDPR/CCPA
erasure requests), `openapi` (the API's OpenAPI document).
"""
from __future__ import annotations

from http import HTTPStatus

from flask import Blueprint, Response, g, json, request
from marshmallow import ValidationError
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from hub.crypto import sha256_hex
from hub.db import transaction
from hub.models import Workspace
from hub.runtime import current_runtime

PREFIX = "/api/v1"
PROBLEM_TYPE = "application/problem+json"
PUBLIC_ENDPOINTS = frozenset({"api.openapi_document"})

bp = Blueprint("api", __name__, url_prefix=PREFIX)


class Problem(Exception):
    """An API error: HTTP status, machine-readable reason, human detail."""

    def __init__(self, status: int, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.status, self.reason, self.detail = status, reason, detail


def problem(status: int, reason: str, detail: str = "", **extra) -> Response:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "reason": reason}
    if detail:
        body["detail"] = detail
    body.update(extra)
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_TYPE)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="lead hub"'
    return response


@bp.errorhandler(Problem)
def _on_problem(exc: Problem):
    return problem(exc.status, exc.reason, exc.detail)


@bp.errorhandler(HTTPException)
def _on_http_error(exc: HTTPException):
    reason = (exc.name or "error").lower().replace(" ", "_")
    return problem(exc.code or 500, reason, exc.description or "")


@bp.app_errorhandler(404)
@bp.app_errorhandler(405)
def _on_unrouted(exc: HTTPException):
    """Paths under /api/v1 that match no route get problem+json too; other paths keep Flask's answer."""
    if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
        return _on_http_error(exc)
    return exc


def bearer_key() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if not header:
        raise Problem(401, "missing_api_key", "send Authorization: Bearer <api key>")
    if scheme.lower() != "bearer" or not key.strip():
        raise Problem(401, "bad_authorization", "the Authorization header must be: Bearer <api key>")
    return key.strip()


@bp.before_request
def _authenticate():
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    key_hash = sha256_hex(bearer_key())
    with transaction(current_runtime().engine) as session:
        workspace_id = session.scalar(select(Workspace.id).where(Workspace.api_key_hash == key_hash))
    if workspace_id is None:
        raise Problem(401, "bad_api_key", "no workspace has this API key")
    g.workspace_id = workspace_id
    return None


def json_body() -> dict:
    """The request's JSON object, or a 400/415 problem."""
    if not request.is_json:
        raise Problem(415, "unsupported_media_type", "send Content-Type: application/json")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise Problem(400, "malformed_json", "the body must be one JSON object")
    return body


def validated(schema, values) -> dict:
    """marshmallow-validated values, or a 400 problem naming each bad field."""
    try:
        return schema.load(values)
    except ValidationError as exc:
        raise ValidationProblem(exc.messages) from exc


class ValidationProblem(Problem):
    def __init__(self, messages: dict):
        super().__init__(400, "invalid_request", "see `errors`")
        self.messages = messages


@bp.errorhandler(ValidationProblem)
def _on_validation_problem(exc: ValidationProblem):
    return problem(exc.status, exc.reason, exc.detail, errors=exc.messages)


from hub.api import contacts, erasures, openapi  # noqa: E402,F401  (routes register on bp)
