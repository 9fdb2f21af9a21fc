"""Webflow (Data API v2) webhooks: form submissions signed with a hex HMAC-SHA256 of `timestamp:body`.

`x-webflow-timestamp` is in milliseconds and must be within the 5-minute window. Form `data`
keys are the labels the site designer typed ("First Name", "email"), so they are matched
case-insensitively against common labels; numbers may arrive as JSON numbers.
Webhooks created from the Webflow dashboard historically carry no signature headers: the hub
refuses them (401 missing_signature); create the webhook through the API with a secret.
"""
from __future__ import annotations

import logging
import time

from hub.changes import ActivitySpec, ContactChange
from hub.exceptions import PayloadError
from webhooks.common import (
    FormAnswers,
    IncomingEvent,
    bounded_key,
    check_timestamp,
    form_activity_kind,
    from_iso,
    hmac_sha256_hex,
    load_json,
    parse_int_header,
    require_header,
    sha256_hex,
    verify_hmac,
)

logger = logging.getLogger(__name__)

SOURCE = "webflow"
SIGNATURE_HEADER = "x-webflow-signature"
TIMESTAMP_HEADER = "x-webflow-timestamp"
# Phone numbers typed into a number input arrive as JSON numbers; they are read as text.
TEXT_FIELDS = frozenset({"phone", "mobile_phone"})


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return hmac_sha256_hex(secret, timestamp.encode() + b":" + body)


def verify(request, secret: str, now: float | None = None) -> None:
    timestamp = require_header(request, TIMESTAMP_HEADER).strip()
    given = require_header(request, SIGNATURE_HEADER)
    check_timestamp(parse_int_header(timestamp) / 1000, now=time.time() if now is None else now)
    verify_hmac(signature(secret, timestamp, request.get_data(cache=True)), given.strip().lower())


def parse(body: bytes) -> list[IncomingEvent]:
    document = load_json(body)
    if not isinstance(document, dict) or not document.get("triggerType") \
            or not isinstance(document.get("payload"), dict):
        raise PayloadError("malformed_payload", "expected a Webflow webhook with triggerType and payload")
    payload = document["payload"]
    kind = str(document["triggerType"])
    # Form submissions carry an id; other trigger types are kept too, keyed by their signed bytes.
    identity = payload.get("id") or f"body-{sha256_hex(body)}"
    return [IncomingEvent(source=SOURCE, kind=kind, dedupe_key=bounded_key(SOURCE, kind, identity),
                          payload=document, occurred_at=from_iso(payload.get("submittedAt")))]


# --- handlers -------------------------------------------------------------------------------------

def form_submission(document: dict) -> list[ContactChange]:
    payload = document["payload"]
    answers = FormAnswers()
    for label, value in (payload.get("data") or {}).items():
        answers.add(label, value)
    answers.finish()
    for name in TEXT_FIELDS & answers.fields.keys():
        if isinstance(answers.fields[name], (int, float)) and not isinstance(answers.fields[name], bool):
            answers.fields[name] = str(answers.fields[name])
    submitted_at = from_iso(payload.get("submittedAt"))
    activity = ActivitySpec(kind=form_activity_kind(payload.get("name")), occurred_at=submitted_at,
                            properties={"form": payload.get("name"), "form_id": payload.get("formId"),
                                        "site_id": payload.get("siteId"), "source": SOURCE,
                                        "submission_id": payload.get("id")})
    return [ContactChange(system="form", fields=answers.fields, consent=answers.consent, custom=answers.custom,
                          changed_at=submitted_at, activity=activity)]


HANDLERS = {"form_submission": form_submission}
