"""The shared receiver route code: verify -> parse -> route -> store -> answer. No vendor logic here.

Vendor modules provide `verify(request, secret)` and `parse(body)`; optional hooks:
`unsigned_response(request)` (answer without storing, e.g. WooCommerce's ping),
`check_account(events, target)` (e.g. Salesforce OrganizationId), `respond(result, target)`,
`parse_request(request)` (used instead of `parse(body)` when the dedupe key or event type is in a
header, e.g. Shopify's X-Shopify-Event-Id), and `bp` (a blueprint of the module's own pages).
"""
from __future__ import annotations

import functools
import logging
import re
import time
from typing import Any, NamedTuple

from flask import Blueprint, g, request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from hub import metrics
from hub.directory import Target
from hub.exceptions import PayloadError, RoutingError, SignatureError
from hub.runtime import current_runtime
from hub.store import ingest
from webhooks import hubspot
from webhooks.registry import SOURCE_RECEIVERS
from webhooks.responses import accepted, error

logger = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)
# Receiver modules may bring small pages of their own (the HTML form's thank-you page).
for _module in dict.fromkeys(SOURCE_RECEIVERS.values()):
    if getattr(_module, "bp", None) is not None:
        bp.register_blueprint(_module.bp)

# Errors that mean "the database cannot be reached now": the vendor gets 503 and retries later.
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeoutError)


def _directory():
    from flask import current_app

    return current_app.extensions["hub_directory"]


# Characters that werkzeug's request.url (quote, then uri_to_iri) leaves as they are.
_PLAIN_URL_PART = re.compile(r"[A-Za-z0-9/_.~=&-]*")


def public_url(req=None) -> str:
    """The URL the vendor called: HUB_PUBLIC_URL + path + query, or the request's own URL.

    `req` is the request object itself when the caller has it (each access through flask's `request`
    proxy costs a context look-up)."""
    req = req or request._get_current_object()
    base = current_runtime().settings.public_url
    query = req.query_string.decode("latin-1")
    path, root_path = req.path, req.root_path
    if not base:
        host = req.host
        if not (_PLAIN_URL_PART.fullmatch(path) and _PLAIN_URL_PART.fullmatch(query)
                and _PLAIN_URL_PART.fullmatch(root_path) and "xn--" not in host.lower()):
            return req.url
        # the same string as request.url, without its quote/unquote round trip (every delivery pays it)
        base = f"{req.scheme}://{host}{root_path}"
    return base + path + ("?" + query if query else "")


def _reject(source: str, status: int, reason: str, detail: str = ""):
    metrics.EVENTS_REJECTED.labels(source=source, reason=reason).inc()
    logger.info("webhook rejected source=%s reason=%s", source, reason)
    return error(status, reason, detail)


class _SourceMetrics(NamedTuple):
    received: Any
    deduped: Any
    latency: Any


@functools.lru_cache(maxsize=None)
def _counted(source: str) -> _SourceMetrics:
    """The metric children of one source: `.labels()` once per source, not per request."""
    return _SourceMetrics(metrics.EVENTS_RECEIVED.labels(source=source),
                          metrics.EVENTS_DEDUPED.labels(source=source), metrics.INGEST_LATENCY.labels(source=source))


def _store(source: str, routed, status: str = "pending"):
    """Commit, then count. Database errors propagate to `database_unavailable` (503)."""
    result = ingest(current_runtime().engine, routed, status=status)
    counted = _counted(source)
    counted.received.inc(len(result.accepted))
    if result.duplicates:
        counted.deduped.inc(result.duplicates)
    return result


def _database_down(exc: Exception) -> bool:
    if isinstance(exc, DATABASE_DOWN):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@bp.errorhandler(DBAPIError)
@bp.errorhandler(PoolTimeoutError)
def database_unavailable(exc: Exception):
    """Any receiver step (directory look-up, ingest) that cannot reach the database answers 503."""
    if not _database_down(exc):
        raise exc
    source = getattr(g, "webhook_source", "unknown")
    logger.warning("database unavailable while receiving %s: %s", source, type(exc).__name__)
    return _reject(source, 503, "database_unavailable")


def receive(module, source: str, target: Target, **verify_kwargs):
    """Verify, parse, check the account, store; shared by every vendor route."""
    started = time.perf_counter()
    g.webhook_source = source
    hook = getattr(module, "unsigned_response", None)
    if hook is not None:
        early = hook(request)
        if early is not None:
            return early
    try:
        module.verify(request, target.secret, **verify_kwargs)
    except SignatureError as exc:
        return _reject(source, 401, exc.reason)
    body = request.get_data(cache=True)
    try:
        parse_request = getattr(module, "parse_request", None)
        events = parse_request(request) if parse_request is not None else module.parse(body)
        check = getattr(module, "check_account", None)
        if check is not None:
            check(events, target)
    except PayloadError as exc:
        if getattr(module, "STORE_MALFORMED", True):
            _store_malformed(source, target, body, exc.reason)
        return _reject(source, 400, exc.reason, str(exc))
    except RoutingError as exc:
        return _reject(source, exc.status, exc.reason)
    result = _store(source, [(target.workspace_id, event) for event in events])
    _counted(source).latency.observe(time.perf_counter() - started)
    respond = getattr(module, "respond", None)
    return respond(result, target) if respond else accepted(result)


def _store_malformed(source: str, target: Target, body: bytes, reason: str) -> None:
    """Authentic but unparseable: kept for inspection, never processed."""
    from webhooks.common import IncomingEvent, sha256_hex

    event = IncomingEvent(source=source, kind="malformed", dedupe_key=f"malformed:{sha256_hex(body)}",
                          payload={"reason": reason, "body": body.decode("utf-8", "replace")[:100_000]})
    _store(source, [(target.workspace_id, event)], status="malformed")


@bp.post("/webhooks/hubspot")
def hubspot_webhook():
    """Route by portalId; the signature is checked against the app secrets the hub knows."""
    source = g.webhook_source = "hubspot"
    started = time.perf_counter()
    portals = _directory().hubspot_portals()
    secrets = {t.secret for t in portals.values() if t.secret}
    if not secrets:
        return _reject(source, 404, "no_hubspot_connection")
    req = request._get_current_object()
    uri = public_url(req)
    matched, last_error = None, SignatureError("bad_signature")
    for secret in secrets:
        try:
            hubspot.verify(req, secret, uri)
            matched = secret
            break
        except SignatureError as exc:
            last_error = exc
    if matched is None:
        return _reject(source, 401, last_error.reason)
    try:
        events = hubspot.parse(req.get_data(cache=True))
    except PayloadError as exc:
        return _reject(source, 400, exc.reason, str(exc))
    routed = []
    for event in events:
        target = portals.get(event.account_id)
        if target is None or target.secret != matched:
            return _reject(source, 403, "unknown_portal")
        routed.append((target.workspace_id, event))
    result = _store(source, routed)
    _counted(source).latency.observe(time.perf_counter() - started)
    return accepted(result)


@bp.post("/webhooks/salesforce/<source_key>")
def salesforce_webhook(source_key: str):
    from webhooks import registry

    module = registry.CRM_RECEIVERS.get("salesforce")
    g.webhook_source = "salesforce"
    target = _directory().salesforce(source_key)
    if target is None or module is None:
        return _reject("salesforce", 404, "unknown_source")
    return receive(module, "salesforce", target)


def _source_webhook(source_key: str):
    target = _directory().source(source_key)
    module = SOURCE_RECEIVERS.get(target.kind) if target else None
    if target is None or module is None:
        return _reject("unknown", 404, "unknown_source")
    return receive(module, target.kind, target)


@bp.post("/webhooks/forms/<source_key>")
def form_webhook(source_key: str):
    return _source_webhook(source_key)


@bp.post("/webhooks/shops/<source_key>")
def shop_webhook(source_key: str):
    return _source_webhook(source_key)
