"""Plain HTML form posts: form-encoded fields posted straight from a visitor's browser.

There is no signature: the unguessable source key in the URL is the guard, and a honeypot field
(`website_url`, hidden from people, filled in by bots) must be empty. A filled honeypot gets the
same 303 answer as a real submission, so a bot learns nothing, but nothing is stored. Fields are
stored in the generic source's shape (`form.submitted`), so one handler serves both.
"""
from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlsplit

from flask import Blueprint, Response, redirect, url_for

from hub.changes import ContactChange
from hub.exceptions import PayloadError
from webhooks import standard
from webhooks.common import IncomingEvent, bounded_key, key_hash, sha256_hex

logger = logging.getLogger(__name__)

SOURCE = "html"
HONEYPOT_FIELD = "website_url"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_CONSENT_KEY = re.compile(r"^consent(?:_|\[)(?P<channel>[a-z]+)\]?$")
RESERVED_FIELDS = frozenset({HONEYPOT_FIELD, "form"})

# Served when a source has no thank_you_url; registered under the webhooks blueprint by routes.
bp = Blueprint("html_form", __name__)

THANK_YOU_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Thank you</title></head>
<body style="font-family:sans-serif;max-width:32rem;margin:4rem auto;text-align:center">
<h1>Thank you</h1><p>Your submission has been received.</p></body></html>
"""


@bp.get("/webhooks/forms/thanks")
def thanks() -> Response:
    return Response(THANK_YOU_PAGE, status=200, content_type="text/html; charset=utf-8")


def verify(request, secret: str | None) -> None:
    """Nothing to verify: the source key routed the request and the honeypot is checked in parse."""
    return None


def _pairs(request) -> list[tuple[str, str]]:
    if request.mimetype not in FORM_TYPES:
        raise PayloadError("unsupported_content_type", "post the form as application/x-www-form-urlencoded")
    return [(name, value) for name in request.form for value in request.form.getlist(name)]


def _as_data(pairs: list[tuple[str, str]]) -> dict:
    """Form pairs -> the generic `data` object: repeated names (checkboxes) become lists."""
    data: dict = {"consent": {}}
    for name, value in pairs:
        match = _CONSENT_KEY.match(name)
        if match:
            data["consent"][match.group("channel")] = value
        elif name in data:
            data[name] = (data[name] if isinstance(data[name], list) else [data[name]]) + [value]
        else:
            data[name] = value
    return data


def dedupe_key(scope: str, pairs: list[tuple[str, str]], received_at: datetime) -> str:
    # A browser form has no message id. Resubmits (double clicks, back + submit, refreshes of the
    # POST) repeat the same fields within moments, so (source, fields, minute) folds them into one
    # event; two people cannot post identical fields (same email) within one minute in practice,
    # and if one person does, the second copy adds nothing. A resubmit that straddles a minute
    # boundary is stored twice, which processing absorbs (same values, same contact).
    minute = received_at.strftime("%Y-%m-%dT%H:%M")
    canonical = "\n".join(f"{name}={value}" for name, value in sorted(pairs))
    return bounded_key(SOURCE, scope, minute, sha256_hex(canonical))


def parse(body: bytes, scope: str = "", now: datetime | None = None) -> list[IncomingEvent]:
    """An url-encoded body; see `parse_request` for multipart posts."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError("malformed_form", "body is not an url-encoded form") from exc
    return events_from_pairs(pairs, scope, now)


def events_from_pairs(pairs: list[tuple[str, str]], scope: str = "",
                      now: datetime | None = None) -> list[IncomingEvent]:
    received_at = now or datetime.now(timezone.utc)
    if any(name == HONEYPOT_FIELD and value.strip() for name, value in pairs):
        logger.info("html form honeypot filled: submission dropped (source %s)", scope)
        return []
    pairs = [(name, value) for name, value in pairs if name != HONEYPOT_FIELD]
    if not any(value.strip() for name, value in pairs if name not in RESERVED_FIELDS):
        raise PayloadError("empty_form", "the form posted no values")
    data = _as_data(pairs)
    payload = {"type": "form.submitted", "timestamp": received_at.isoformat(), "source": SOURCE, "data": data}
    return [IncomingEvent(source=SOURCE, kind="form.submitted", dedupe_key=dedupe_key(scope, pairs, received_at),
                          payload=payload, occurred_at=received_at)]


def parse_request(request) -> list[IncomingEvent]:
    scope = key_hash((request.view_args or {}).get("source_key", ""))
    return events_from_pairs(_pairs(request), scope)


def _thank_you_url(target) -> str:
    url = (target.settings or {}).get("thank_you_url") or ""
    if urlsplit(url).scheme in ("http", "https") or url.startswith("/"):
        return url
    return url_for("webhooks.html_form.thanks")


def respond(result, target) -> Response:
    """303 See Other, so a browser refresh on the thank-you page does not post the form again."""
    return redirect(_thank_you_url(target), code=303)


def form_submitted(payload: dict) -> list[ContactChange]:
    return standard.form_submitted(payload)


HANDLERS = {"form.submitted": form_submitted}
