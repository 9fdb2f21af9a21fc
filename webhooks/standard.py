"""Generic sources signed with Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).

Signed content is `id.timestamp.body`, HMAC-SHA256 with the base64-decoded `whsec_` secret; the
header may list several `v1,<base64>` signatures (key rotation) and any one may match. The
timestamp is in seconds and must be within 5 minutes; the message id is the dedupe key.
The body follows DESIGN.md "Form submissions" (`type: form.submitted`, `data: {...}`); its
handler is shared with plain HTML forms, which post the same field names.
"""
from __future__ import annotations

import base64
import binascii
import logging
import time

from hub.changes import ActivitySpec, ContactChange
from hub.exceptions import PayloadError, SignatureError
from webhooks.common import (
    FormAnswers,
    IncomingEvent,
    bounded_key,
    check_timestamp,
    form_activity_kind,
    from_iso,
    hmac_sha256_b64,
    key_hash,
    load_json,
    parse_int_header,
    require_header,
    signatures_match,
    truthy,
)

logger = logging.getLogger(__name__)

SOURCE = "generic"
SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
# Keys of `data` that are about the submission, not answers about the person.
SUBMISSION_KEYS = frozenset({"form", "consent", "fields"})


def secret_key(secret: str) -> bytes:
    """`whsec_<base64>` -> key bytes; padding may be missing (the reference libraries accept that)."""
    text = secret.strip()
    text = text[len(SECRET_PREFIX):] if text.startswith(SECRET_PREFIX) else text
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("invalid_secret", "the source secret is not base64") from exc


def signature(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + body
    return f"{SIGNATURE_VERSION},{hmac_sha256_b64(secret_key(secret), signed)}"


def verify(request, secret: str, now: float | None = None) -> None:
    message_id = require_header(request, "webhook-id").strip()
    timestamp = require_header(request, "webhook-timestamp").strip()
    given = require_header(request, "webhook-signature")
    check_timestamp(parse_int_header(timestamp), now=time.time() if now is None else now)
    expected = signature(secret, message_id, timestamp, request.get_data(cache=True))
    # Every listed v1 signature is tried (rotation); other versions (v1a: ed25519) are not ours.
    candidates = [item for item in given.split() if item.startswith(SIGNATURE_VERSION + ",")]
    if not any(signatures_match(expected, candidate) for candidate in candidates):
        raise SignatureError("bad_signature")


def parse(body: bytes, message_id: str | None = None, scope: str = "") -> list[IncomingEvent]:
    """`message_id` is the `webhook-id` header; `scope` keeps two sources' ids apart."""
    if not message_id:
        raise PayloadError("missing_message_id", "webhook-id is required to identify the message")
    document = load_json(body)
    if not isinstance(document, dict) or not isinstance(document.get("type"), str):
        raise PayloadError("malformed_payload", "expected {\"type\": ..., \"timestamp\": ..., \"data\": {...}}")
    if document["type"] == "form.submitted" and not isinstance(document.get("data"), dict):
        raise PayloadError("malformed_payload", "form.submitted needs a data object")
    return [IncomingEvent(source=SOURCE, kind=document["type"], dedupe_key=bounded_key(SOURCE, scope, message_id),
                          payload=document, occurred_at=from_iso(document.get("timestamp")))]


def parse_request(request) -> list[IncomingEvent]:
    # The source key is hashed: it is the URL's guard and is not written into event rows.
    scope = key_hash((request.view_args or {}).get("source_key", ""))
    return parse(request.get_data(cache=True), request.headers.get("webhook-id"), scope)


# --- handlers -------------------------------------------------------------------------------------

def _consent(value) -> dict:
    if not isinstance(value, dict):
        return {}
    flags = {str(channel): truthy(granted) for channel, granted in value.items()}
    return {channel: granted for channel, granted in flags.items() if granted is not None}


def form_submitted(payload: dict) -> list[ContactChange]:
    """A form submission (generic JSON or HTML form) as one change with a form_submit activity."""
    data = payload.get("data") or {}
    answers = FormAnswers()
    for name, value in data.items():
        if name not in SUBMISSION_KEYS:
            answers.add(name, value)
    answers.finish()
    answers.consent.update(_consent(data.get("consent")))
    for name, value in (data.get("fields") or {}).items():
        answers.custom.setdefault(str(name), value)
    submitted_at = from_iso(payload.get("timestamp"))
    activity = ActivitySpec(kind=form_activity_kind(data.get("form")), occurred_at=submitted_at,
                            properties={"form": data.get("form"), "source": payload.get("source", SOURCE)})
    return [ContactChange(system="form", fields=answers.fields, consent=answers.consent, custom=answers.custom,
                          changed_at=submitted_at, activity=activity)]


HANDLERS = {"form.submitted": form_submitted}
